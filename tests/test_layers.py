"""Imports run one way: every module may import its own layer and the layers below it, never one above.

The order is data here and in docs/architecture.md; a new top-level module
must be placed in a layer before this test passes.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "hrseg"

#: bottom to top; a module belongs to the layer of the longest prefix that names it
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("base", ("hrseg", "hrseg.errors", "hrseg.atomic", "hrseg.console", "hrseg.registry", "hrseg.device",
              "hrseg.ownership", "hrseg.locking", "hrseg.toml", "hrseg.typed")),
    ("data", ("hrseg.data",)),
    ("models", ("hrseg.models",)),
    ("inference", ("hrseg.inference",)),
    ("training", ("hrseg.training",)),
    ("loader", ("hrseg.loader",)),
    ("evaluation", ("hrseg.evaluation",)),
    ("visualization", ("hrseg.visualization",)),
    ("application", ("hrseg.export", "hrseg.reporting", "hrseg.quickstart")),
    ("cli", ("hrseg.cli", "hrseg.__main__")),
]


def layer_of(module: str) -> int:
    """Rank of ``module`` (0 = bottom); KeyError for a module no layer names."""
    best, rank = "", -1
    for i, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            nested = prefix != "hrseg" and module.startswith(prefix + ".")  # the package itself: __init__ only
            if (module == prefix or nested) and len(prefix) > len(best):
                best, rank = prefix, i
    if rank < 0:
        raise KeyError(module)
    return rank


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def hrseg_imports(source: str, module: str) -> list[tuple[int, str]]:
    """(line, imported module) for every import of hrseg in ``source``, function-local and TYPE_CHECKING ones too."""
    found: list[tuple[int, str]] = []
    package = module if module.count(".") == 0 else module.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "hrseg"]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            if base.split(".")[0] == "hrseg":
                found.append((node.lineno, base))
    return found


def violations(source: str, module: str) -> list[str]:
    here = layer_of(module)
    return [f"{module}:{line} imports {target} ({LAYERS[layer_of(target)][0]} is above {LAYERS[here][0]})"
            for line, target in hrseg_imports(source, module) if layer_of(target) > here]


def test_every_module_is_in_a_layer() -> None:
    unplaced = []
    for path in sorted(ROOT.rglob("*.py")):
        try:
            layer_of(module_name(path))
        except KeyError:
            unplaced.append(module_name(path))
    assert unplaced == [], f"place these modules in a layer of tests/test_layers.py: {unplaced}"


def test_no_import_runs_up_the_layers() -> None:
    found = [v for path in sorted(ROOT.rglob("*.py")) for v in violations(path.read_text(), module_name(path))]
    assert found == []


@pytest.mark.parametrize("source, module, expected", [
    ("from hrseg.evaluation.weighting import weight_maps\n", "hrseg.training.tensorboard",
     ["hrseg.training.tensorboard:1 imports hrseg.evaluation.weighting (evaluation is above training)"]),
    ("def f():\n    from hrseg.visualization import panels\n", "hrseg.inference.outputs",
     ["hrseg.inference.outputs:2 imports hrseg.visualization (visualization is above inference)"]),
    ("import hrseg.training.build\n", "hrseg.data.readers",
     ["hrseg.data.readers:1 imports hrseg.training.build (training is above data)"]),
    ("from hrseg.data.labels import colorize\nfrom hrseg.device import resolve_device\n", "hrseg.evaluation.x", []),
    ("from . import build\n", "hrseg.training.trainer", []),
])
def test_the_check_sees_upward_imports(source: str, module: str, expected: list[str]) -> None:
    assert violations(source, module) == expected


def test_a_module_no_layer_names_is_refused_not_taken_for_the_base() -> None:
    assert layer_of("hrseg") == 0 and layer_of("hrseg.device") == 0 and layer_of("hrseg.cli.train") == len(LAYERS) - 1
    with pytest.raises(KeyError):
        layer_of("hrseg.newthing")
