"""envs/pathpipe.yaml (the rules' conda env) stays in step with pyproject.toml."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]

# conda-forge packages that provide a PyPI distribution under another name.
CONDA_ALIASES = {
    "matplotlib-base": "matplotlib",
    "pytorch": "torch",
    "python-igraph": "igraph",
    "py-opencv": "opencv-python-headless",
}


def _normalize(name: str) -> str:
    """PEP 503 normalized project name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _name(requirement: str) -> str:
    """Project name of a PEP 508 or conda match spec ("numpy>=1.26", "python=3.11")."""
    return _normalize(re.split(r"[\s<>=!~;\[]", requirement.strip(), maxsplit=1)[0])


def _pyproject_requirements() -> list[str]:
    with open(REPO / "pyproject.toml", "rb") as f:
        project = tomllib.load(f)["project"]
    extras = project["optional-dependencies"]
    return [*project["dependencies"], *extras["workflow"], *extras["full"]]


def _env() -> tuple[list[str], list[str]]:
    """(conda specs, pip requirements) of envs/pathpipe.yaml."""
    with open(REPO / "envs" / "pathpipe.yaml", encoding="utf-8") as f:
        env = yaml.safe_load(f)
    conda = [d for d in env["dependencies"] if isinstance(d, str)]
    pip = [r for d in env["dependencies"] if isinstance(d, dict) for r in d.get("pip", [])]
    return conda, pip


def test_env_names_every_pyproject_dependency() -> None:
    conda, pip = _env()
    provided = {CONDA_ALIASES.get(_name(spec), _name(spec)) for spec in conda}
    provided |= {_name(req) for req in pip if not req.startswith("-")}
    missing = sorted({_name(req) for req in _pyproject_requirements()} - provided)
    assert not missing, f"in pyproject.toml but not in envs/pathpipe.yaml: {missing}"


def test_env_pins_python_and_installs_pathpipe_itself() -> None:
    conda, pip = _env()
    assert "python=3.11" in conda
    assert "pip" in conda
    assert "-e ${PATHPIPE_SOURCE}" in pip, "the env must install pathpipe from the checkout"
    # The workflow points PATHPIPE_SOURCE at the checkout before conda builds the env.
    common = (REPO / "workflow" / "rules" / "common.smk").read_text(encoding="utf-8")
    assert 'os.environ.setdefault("PATHPIPE_SOURCE"' in common


def test_every_rule_uses_the_env() -> None:
    for smk in ("tissue.smk", "tiling.smk", "segmentation.smk"):
        text = (REPO / "workflow" / "rules" / smk).read_text(encoding="utf-8")
        n_rules = len(re.findall(r"^rule \w+:", text, flags=re.MULTILINE))
        assert text.count('conda:\n        "../../envs/pathpipe.yaml"') == n_rules, smk
