"""The layer order, read from the imports: a package imports only its own tier and the tiers below.

Data flows source -> rewrite -> export -> precision -> runners -> verify -> deploy, composed by
``pipeline``; the runners sit low because every stage that runs a model (export's parity
check, precision's evaluation and sensitivity pass, verify) runs it through them. Imports
inside functions count too: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import segexport

PACKAGE = Path(segexport.__file__).parent

# Bottom first. A module may import its own tier and any tier below it, never one above.
TIERS: tuple[frozenset[str], ...] = tuple(frozenset(t) for t in (
    {"", "errors", "progress", "limits", "error_map", "locks", "hashing", "ownership", "fsutil", "recipe",
     "metrics", "onnx_graph", "interrupts"},
    {"data", "instance_metrics", "instance_outputs"},
    {"distributed"},
    {"nn"},
    {"models"},
    {"checkpoint", "weights"},
    {"engine"},  # the TensorRT adapter and engine builds; runs nothing of ours
    {"runners"},
    {"train", "train_instance", "train_run"},
    {"rewrite"},
    {"export"},
    {"precision"},
    {"postprocess"},
    {"verify"},
    {"deploy"},
    {"pipeline"},
    {"cli", "__main__"},
))


def tier_of(module: str) -> int:
    """The tier of ``segexport.X...`` (``X`` a subpackage or a top-level module)."""
    parts = module.split(".")
    if parts[0] != "segexport":
        raise ValueError(f"{module} is not a segexport module")
    top = parts[1] if len(parts) > 1 else ""
    for index, tier in enumerate(TIERS):
        if top in tier:
            return index
    raise KeyError(f"segexport.{top} has no tier: add it to TIERS in tests/test_layers.py")


def violation(importer: str, imported: str) -> str | None:
    """A message when ``importer`` may not import ``imported``, else None."""
    if tier_of(imported) > tier_of(importer):
        return f"{importer} imports {imported}, a higher layer"
    return None


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path) -> set[str]:
    """Every ``segexport...`` module ``path`` imports, at any depth of the file."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("segexport"))
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "segexport":  # from segexport import x: x is a module or a name of the root
                found.update(f"segexport.{a.name}" if (PACKAGE / a.name).exists() or (PACKAGE / f"{a.name}.py").exists()
                             else "segexport" for a in node.names)
            elif node.module.startswith("segexport."):
                found.add(node.module)
    return found


def all_violations() -> list[str]:
    problems = []
    for path in sorted(PACKAGE.rglob("*.py")):
        importer = module_name(path)
        problems += [v for imported in sorted(imports_of(path)) if (v := violation(importer, imported))]
    return problems


def test_every_module_has_a_tier():
    for path in PACKAGE.rglob("*.py"):
        tier_of(module_name(path))  # raises KeyError naming the module


def test_no_module_imports_a_higher_layer():
    assert all_violations() == []


# The upward halves of the package cycles that issue 15 found; each must stay forbidden.
FORMER_CYCLES = [
    ("segexport.precision.evaluate", "segexport.verify.metrics"),
    ("segexport.precision.fp16", "segexport.verify"),
    ("segexport.train", "segexport.verify.metrics"),
    ("segexport.postprocess.evaluate", "segexport.verify.metrics"),
    ("segexport.engine.build", "segexport.runners.onnxruntime_runner"),
    ("segexport.export.stage", "segexport.postprocess"),
    ("segexport.rewrite.fit_decision", "segexport.verify.metrics"),
    ("segexport.runners.onnxruntime_runner", "segexport.export.verify_onnx"),
    ("segexport.export.source", "segexport.pipeline"),
]


@pytest.mark.parametrize(("importer", "imported"), FORMER_CYCLES)
def test_former_cycle_edges_are_violations(importer, imported):
    assert violation(importer, imported) is not None


def test_the_check_reads_lazy_imports(tmp_path):
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from segexport.verify import report\n    import segexport.pipeline.core\n")
    assert imports_of(source) == {"segexport.verify", "segexport.pipeline.core"}
