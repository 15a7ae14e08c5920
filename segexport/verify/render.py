"""The verify report as people and CI systems read it: a rich table, ``report.md`` and JUnit XML.

All three render the same report dict (``report.json``) and nothing else, so they cannot
disagree with it.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from segexport.fsutil import atomic_path

_COLUMNS = ("variant", "backend", "precision", "target", "mIoU", "drop (pts)", "budget (pts)", "agreement",
            "max |Δlogit|", "p50 ms", "p90 ms", "p99 ms", "img/s", "speedup", "vs FP32", "peak MB", "result")
# An instance network's rows (report["task"] == "instance"): judged by the AP drop; mIoU is the painted map's.
_INSTANCE_COLUMNS = ("variant", "backend", "precision", "target", "mask AP", "mask AP50", "box AP", "box AP50",
                     "AP drop (pts)", "budget (pts)", "mIoU", "agreement", "p50 ms", "p90 ms", "p99 ms", "img/s",
                     "speedup", "vs FP32", "peak MB", "result")
CRF_TITLE = "Dense CRF (host)"
_CRF_COLUMNS = ("variant", "mIoU", "gain (pts)", "trimap mIoU", "trimap gain (pts)", "changed px", "CRF ms/img",
                "engine p50 ms")


def wide_console(width: int = 240) -> Console:
    """A stdout console; off a terminal (CI logs, pipes) ``width`` columns instead of rich's 80,
    so wide tables are not truncated."""
    console = Console()
    return console if console.is_terminal else Console(width=width)


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def verdict(row: dict[str, Any]) -> str:
    """``PASS``, ``FAIL``, ``ERROR``, ``skipped`` or ``not judged`` (``reference`` for the reference row)."""
    if row.get("is_reference"):
        return "reference"
    if row.get("skipped"):
        return "skipped"
    if row.get("error"):
        return "ERROR"
    return {True: "PASS", False: "FAIL", None: "not judged"}[row.get("pass")]


def columns_of(report: dict[str, Any]) -> tuple[str, ...]:
    """The table's columns: an instance network's AP columns, else the semantic ones."""
    return _INSTANCE_COLUMNS if report.get("task") == "instance" else _COLUMNS


def _cells(row: dict[str, Any], instance: bool = False) -> list[str]:
    latency = row.get("latency_ms") or {}
    if instance:
        accuracy = [*(_fmt(row.get(k), ".4f") for k in ("mask_ap", "mask_ap50", "box_ap", "box_ap50")),
                    _fmt(row.get("ap_drop_pts"), "+.3f"), _fmt(row.get("budget_pts"), "g"),
                    _fmt(row.get("miou"), ".4f"), _fmt(row.get("agreement"), ".5f")]
    else:
        accuracy = [_fmt(row.get("miou"), ".4f"), _fmt(row.get("miou_drop_pts"), "+.3f"),
                    _fmt(row.get("budget_pts"), "g"), _fmt(row.get("agreement"), ".5f"),
                    _fmt(row.get("max_abs_logit_error"), ".3g")]
    return [
        row["name"], row["backend"], row["precision"], row.get("target") or "-", *accuracy,
        _fmt(latency.get("p50"), ".2f"), _fmt(latency.get("p90"), ".2f"), _fmt(latency.get("p99"), ".2f"),
        _fmt(row.get("throughput_ips"), ".1f"), _fmt(row.get("speedup_vs_pytorch"), ".2f"),
        _fmt(row.get("speedup_vs_fp32"), ".2f"), _fmt(row.get("peak_rss_mb"), ".0f"),
        verdict(row) + (", slower than FP32" if row.get("int8_slower") else ""),
    ]


def _crf_cells(row: dict[str, Any]) -> list[str]:
    """A ``+crf`` row: figures with the CRF, gains against the same variant without it, CRF time."""
    if row.get("error"):
        return [row["variant"], *["-"] * (len(_CRF_COLUMNS) - 2), "ERROR"]
    return [row["variant"], _fmt(row.get("miou"), ".4f"), _fmt(row.get("miou_gain_pts"), "+.3f"),
            _fmt(row.get("trimap_miou"), ".4f"), _fmt(row.get("trimap_gain_pts"), "+.3f"),
            _fmt(row.get("changed_pixels"), ".2%"), _fmt(row.get("crf_ms_per_image"), ".1f"),
            _fmt(row.get("engine_ms_p50"), ".2f")]


def _print_crf_table(report: dict[str, Any], console: Console) -> None:
    """The ``+crf`` rows (not judged) as a second table, and their errors."""
    table = Table(title=f"{CRF_TITLE}: +crf rows, not judged", title_justify="left")
    for i, name in enumerate(_CRF_COLUMNS):
        table.add_column(name, justify="right" if i else "left", no_wrap=True)
    for row in report["crf"]:
        table.add_row(*_crf_cells(row), style="bold red" if row.get("error") else None)
    console.print(table)
    for row in report["crf"]:
        if row.get("error"):
            console.print(f"[red]{row['variant']} error: {row['error']}[/]", highlight=False)


def rows_of(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The reference row (marked ``is_reference``) followed by every variant row."""
    return [{**report["reference"], "is_reference": True}, *report["variants"]]


def print_report_table(report: dict[str, Any], console: Console) -> None:
    """Render the report as a rich table (failing rows red, skipped grey) plus skip reasons and notes."""
    state = "[bold green]PASS[/]" if report["pass"] else "[bold red]FAIL[/]"
    table = Table(title=f"segexport verify {report['arch']}: {state}", title_justify="left")
    columns, instance = columns_of(report), report.get("task") == "instance"
    for i, name in enumerate(columns):
        table.add_column(name, justify="right" if 4 <= i < len(columns) - 1 else "left", no_wrap=True)
    for row in rows_of(report):
        result = verdict(row)
        style = {"FAIL": "bold red", "ERROR": "bold red", "skipped": "dim", "reference": "bold"}.get(result)
        style = style or ("yellow" if row.get("int8_slower") else None)
        table.add_row(*_cells(row, instance), style=style)
    console.print(table)
    for row in report["variants"]:
        if row.get("skipped"):
            console.print(f"[dim]{row['name']} skipped: {row['skipped']}[/]", highlight=False)
        elif row.get("error"):
            console.print(f"[red]{row['name']} error: {row['error']}[/]", highlight=False)
    if report.get("crf"):
        _print_crf_table(report, console)
    for note in report.get("notes", []):
        console.print(f"note: {note}", highlight=False, markup=False)


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


def render_markdown(report: dict[str, Any]) -> str:
    """``report.md``: a summary line, the table, notes on method and environment, and the pictures."""
    state = "PASS" if report["pass"] else "FAIL"
    lines = [f"# segexport verify: {report['arch']} — {state}", ""]
    data = (f"`{report['data']}` val, {report['images']} images" if report["accuracy_measured"]
            else "no data (latency only)")
    h, w = report["input_size"]
    lines += [(f"Build `{report['build_dir']}` · {data} · input {h}x{w} · {report['device']} · "
              f"{report['threads']} threads"), ""]
    columns, instance = columns_of(report), report.get("task") == "instance"
    lines += ["| " + " | ".join(_md_escape(c) for c in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_md_escape(c) for c in _cells(row, instance)) + " |" for row in rows_of(report)]
    if report.get("crf"):
        lines += ["", f"## {CRF_TITLE}", "", "| " + " | ".join(_CRF_COLUMNS) + " |", "|" + "---|" * len(_CRF_COLUMNS)]
        lines += ["| " + " | ".join(_md_escape(c) for c in _crf_cells(row)) + " |" for row in report["crf"]]
    lines += ["", "## Notes", ""]
    lines += [f"- **{row['name']}** skipped: {_md_escape(row['skipped'])}" for row in report["variants"] if row.get("skipped")]
    lines += [f"- **{row['name']}** error: {_md_escape(row['error'])}" for row in report["variants"] if row.get("error")]
    lines += [f"- **{row['variant']}** error: {_md_escape(row['error'])}" for row in report.get("crf") or []
              if row.get("error")]
    lines += [f"- {note}" for note in report.get("notes", [])]
    methods = report["methods"]
    drop = (("- AP drop: the larger of reference mask AP minus variant mask AP and the same for box AP, in points "
             "(x100); agreement: fraction of pixels whose painted class equals the reference's") if instance else
            (f"- drop: reference mIoU minus variant mIoU, in points (x100); agreement: fraction of pixels whose "
             f"argmax equals the reference's; logit error over the first {report['settings']['logit_images']} images"))
    lines += [drop,
              f"- latency: {methods['latency']}", f"- peak memory: {methods['memory']}",
              "- versions: " + ", ".join(f"{k} {v}" for k, v in report["versions"].items() if v is not None), ""]
    files = report.get("files", {})
    if files.get("parity_png"):
        lines += ["## Parity", "", f"![parity: input, reference, variant, differing pixels]({files['parity_png']})", ""]
    if files.get("latency_png"):
        lines += ["## Latency", "", f"![latency: p50 bars, p90 whiskers]({files['latency_png']})", ""]
    return "\n".join(lines)


def _failure(row: dict[str, Any]) -> str:
    if row.get("ap_drop_pts") is not None:
        return (f"AP drop {row['ap_drop_pts']:.3f} points > budget {row['budget_pts']:g} points "
                f"(mask AP {row['mask_ap']:.4f}, box AP {row['box_ap']:.4f})")
    return (f"mIoU drop {row['miou_drop_pts']:.3f} points > budget {row['budget_pts']:g} points "
            f"(mIoU {row['miou']:.4f} vs reference; agreement {row['agreement']:.5f})")


def _testcase(suite: ET.Element, arch: str, row: dict[str, Any], instance: bool) -> None:
    case = ET.SubElement(suite, "testcase", classname=f"segexport.verify.{arch}", name=row["name"],
                         time=f"{row.get('seconds') or 0.0:.3f}")
    result = verdict(row)
    if result == "skipped":
        ET.SubElement(case, "skipped", message=row["skipped"])
    elif result == "ERROR":
        ET.SubElement(case, "error", message=row["error"], type="RunnerError")
    elif result == "FAIL":
        ET.SubElement(case, "failure", message=_failure(row), type="BudgetExceeded").text = _failure(row)
    elif result == "not judged":
        reason = "no budget" if row.get("budget_pts") is None else "accuracy not measured"
        ET.SubElement(case, "skipped", message=f"not judged: {reason}")
    out = ET.SubElement(case, "system-out")
    columns = _INSTANCE_COLUMNS if instance else _COLUMNS
    out.text = " | ".join(f"{c}={v}" for c, v in zip(columns[1:], _cells(row, instance)[1:]))


JUNIT_SOURCE = "a JUnit report"  # what the output policy records a --junit file as (see segexport.ownership)


def write_junit(path: str | Path, report: dict[str, Any]) -> Path:
    """A JUnit XML file with one test case per variant (failure: broken budget; skipped: with the reason)."""
    variants = report["variants"]
    count = Counter(verdict(r) for r in variants)
    seconds = f"{sum(r.get('seconds') or 0.0 for r in variants):.3f}"
    totals = {"tests": str(len(variants)), "failures": str(count["FAIL"]), "errors": str(count["ERROR"]),
              "skipped": str(count["skipped"] + count["not judged"]), "time": seconds}
    root = ET.Element("testsuites", name="segexport verify", **{k: v for k, v in totals.items() if k != "skipped"})
    suite = ET.SubElement(root, "testsuite", name=f"segexport.verify.{report['arch']}", **totals)
    props = ET.SubElement(suite, "properties")
    for name in ("build_dir", "device", "threads", "data"):
        ET.SubElement(props, "property", name=name, value=str(report.get(name)))
    for row in variants:
        _testcase(suite, report["arch"], row, report.get("task") == "instance")
    ET.indent(root)
    with atomic_path(path) as tmp:
        ET.ElementTree(root).write(tmp, encoding="utf-8", xml_declaration=True)
    return Path(path)
