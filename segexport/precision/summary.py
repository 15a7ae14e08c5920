"""``quantize.json``: one entry per variant (``int8.tensorrt``, ``int8.cpu``, ``fp16``) in an output folder.

Quantizing another variant into the same folder adds its entry and keeps the others, so a
build folder holds one summary for all its precision variants.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from segexport.fsutil import write_json

SUMMARY_NAME = "quantize.json"


def read_summaries(out_dir: str | Path) -> dict[str, Any]:
    """The variants recorded in ``out_dir/quantize.json`` (empty when there is none or it is unreadable)."""
    path = Path(out_dir) / SUMMARY_NAME
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    variants = data.get("variants") if isinstance(data, dict) else None
    return dict(variants) if isinstance(variants, dict) else {}


def write_summary(out_dir: str | Path, variant: str, summary: dict[str, Any]) -> Path:
    """Record ``summary`` as ``variant``'s entry in ``out_dir/quantize.json`` (atomically)."""
    path = Path(out_dir) / SUMMARY_NAME
    variants = {**read_summaries(out_dir), variant: summary}
    write_json(path, {"variants": dict(sorted(variants.items()))})
    return path
