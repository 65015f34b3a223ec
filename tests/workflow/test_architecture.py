"""The shape of the package: stage packages, no import cycles, layers that point down.

The import graph is read from the source (every ``import`` and ``from ... import``,
also inside functions), so a cycle or a reach into another package's private
names fails here before anyone runs the code. ``docs/architecture.md`` describes
the layout these tests hold.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SRC = REPO / "src" / "pathpipe"

# Top-level packages: the stages, the shared layers and the command line.
STAGES = (
    "tissue",
    "tiling",
    "segmentation",
    "features",
    "mil",
    "provenance",
    "synthetic",
    "reconstruction",
)
SHARED = ("io", "errors", "params", "shape", "stain", "device")
# Layers: a package may import only from its own layer or lower ones.
LAYERS = {
    "errors": 0,
    "params": 1,
    "device": 1,
    "shape": 1,
    "io": 1,
    "stain": 2,
    "tissue": 3,
    "tiling": 3,
    "segmentation": 4,  # reads the synthetic generator's annotated tiles only in tests
    "synthetic": 5,  # synthetic.tiles builds segmentation's AnnotatedTile
    "features": 5,
    "mil": 6,
    "reconstruction": 6,  # errors, params, io, tissue (load_mask)
    "provenance": 7,
    "cli": 8,
}


def _modules() -> dict[str, Path]:
    mods = {}
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC.parent).with_suffix("")
        parts = rel.parts[:-1] if rel.parts[-1] == "__init__" else rel.parts
        mods[".".join(parts)] = path
    return mods


def _imports(name: str, path: Path, mods: dict[str, Path]) -> list[tuple[str, list[str]]]:
    """(target module, imported names) of every pathpipe import in a module."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            names = [a.name for a in node.names]
            if target.startswith("pathpipe"):
                out.append((target, names))
                out.extend((f"{target}.{n}", []) for n in names if f"{target}.{n}" in mods)
        elif isinstance(node, ast.Import):
            out.extend((a.name, []) for a in node.names if a.name.startswith("pathpipe"))
    return out


def _top(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


@pytest.fixture(scope="module")
def graph() -> tuple[dict[str, Path], dict[str, list[tuple[str, list[str]]]]]:
    mods = _modules()
    return mods, {name: _imports(name, path, mods) for name, path in mods.items()}


def test_one_package_or_module_per_stage() -> None:
    top = {p.stem for p in SRC.glob("*.py") if p.stem != "__init__"}
    top |= {p.name for p in SRC.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert top == set(STAGES) | set(SHARED) | {"cli"}, sorted(top)
    cli = {p.stem for p in (SRC / "cli").glob("*.py")} - {"__init__", "__main__", "options"}
    assert cli <= set(STAGES) | {"slide"}, sorted(cli)


def test_no_import_cycles(graph) -> None:
    mods, imports = graph
    edges = {
        name: {t for t, _ in targets if t in mods and t != name}
        for name, targets in imports.items()
    }
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(u: str, stack: list[str]) -> None:
        state[u] = 1
        stack.append(u)
        for v in sorted(edges[u]):
            if state.get(v) == 1:
                cycles.append([*stack[stack.index(v) :], v])
            elif not state.get(v):
                visit(v, stack)
        stack.pop()
        state[u] = 2

    for m in sorted(mods):
        if not state.get(m):
            visit(m, [])
    assert not cycles, " ; ".join(" -> ".join(c) for c in cycles)


def test_no_private_names_across_packages(graph) -> None:
    _, imports = graph
    bad = []
    for name, targets in imports.items():
        for target, names in targets:
            if _top(target) in ("", _top(name)):
                continue
            private_module = any(p.startswith("_") for p in target.split(".")[1:])
            private_names = [n for n in names if n.startswith("_") and not n.startswith("__")]
            if private_module or private_names:
                bad.append(f"{name} -> {target} {private_names}")
    assert not bad, "\n".join(bad)


def test_layers_point_down(graph) -> None:
    _, imports = graph
    bad = []
    for name, targets in imports.items():
        src = _top(name)
        for target, _ in targets:
            dst = _top(target)
            if src in LAYERS and dst in LAYERS and LAYERS[dst] > LAYERS[src]:
                bad.append(f"{name} (layer {LAYERS[src]}) -> {target} (layer {LAYERS[dst]})")
    assert not bad, "\n".join(bad)


def test_no_module_loaded_from_a_formatted_string() -> None:
    """Plug-ins are explicit imports, so grep and the import graph see every link."""
    bad = []
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "import_module"
                and node.args
                and not isinstance(node.args[0], ast.Constant)
            ):
                bad.append(f"{path.relative_to(SRC)}:{node.lineno}")
    assert not bad, bad


HEAVY = (
    "torch", "shap", "open3d", "numba", "diffusers", "radiomics", "snakemake", "zarr", "plotly",
)  # fmt: skip


@pytest.mark.parametrize(
    "code",
    [
        "import pathpipe",
        "import sys; from pathpipe.cli import main; sys.argv=['pathpipe', '--help']\n"
        "try:\n    main()\nexcept SystemExit:\n    pass",
    ],
    ids=["import", "help"],
)
def test_import_and_help_load_no_heavy_library(code: str) -> None:
    check = f"""{code}
import sys
heavy = sorted(m for m in sys.modules if m.split(".")[0] in {HEAVY!r})
print("LOADED:" + ",".join(heavy))
"""
    out = subprocess.run(
        [sys.executable, "-c", check], capture_output=True, text=True, check=True
    ).stdout
    loaded = out.rsplit("LOADED:", 1)[1].strip()
    assert loaded == "", f"loaded {loaded}"
