"""Build folders written before segexport kept a ledger of its files (:mod:`segexport.ownership`).

Such a folder would be refused as holding files segexport did not write. Its stage records
(``.stages/STAGE.json``) say otherwise: they list every artifact a stage wrote, with its SHA-256.
So, once, the files whose hash still matches a record are entered in the ledger, with the
build's own bookkeeping (stage records, ``build.json``, ``quantize.json``, the report files),
and the folder's owner is taken from ``build.json``. Anything else stays unknown, and the
claim that follows refuses the folder as before.
"""

from __future__ import annotations

import json
from pathlib import Path

from segexport import ownership
from segexport.pipeline.cache import STAGES_DIR, StageStore

# Files a build writes beside its stage outputs: the manifest, the precision summary, the report.
BOOKKEEPING = ("build.json", "quantize.json", "report.json", "report.md", "parity.png", "latency.png")


def adopt_earlier_build(build_dir: Path) -> list[str]:
    """Enter the files of a build folder written without a ledger in its ledger; their names.

    Does nothing (returns ``[]``) for a folder that has a ledger, or no stage records.
    """
    stages = build_dir / STAGES_DIR
    if (build_dir / ownership.LEDGER_NAME).exists() or not stages.is_dir():
        return []
    adopted: dict[Path, str | None] = {}
    store = StageStore(build_dir)
    for path in sorted(stages.glob("*.json")):
        record = store.read(path.stem)
        outputs = record.outputs.items() if record is not None else ()
        adopted.update({build_dir / rel: sha for rel, sha in outputs
                        if sha and (build_dir / rel).is_file() and ownership.file_digest(build_dir / rel) == sha})
        adopted[path] = None
    adopted.update({build_dir / name: None for name in BOOKKEEPING if (build_dir / name).is_file()})
    folders = {build_dir / f for path in adopted for f in path.relative_to(build_dir).parents[:-1]}
    for folder in sorted(folders, key=lambda f: len(f.parts)):  # each once, parents first
        ownership.record_folder(folder)
    for path, digest in adopted.items():
        ownership.record_file(path, digest or ownership.file_digest(path))
    _adopt_owner(build_dir)
    return sorted(p.relative_to(build_dir).as_posix() for p in adopted)


def _adopt_owner(build_dir: Path) -> None:
    try:
        arch = json.loads((build_dir / "build.json").read_text()).get("arch")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        return
    if isinstance(arch, str):
        ownership.set_owner(build_dir, f"the build of {arch}")
