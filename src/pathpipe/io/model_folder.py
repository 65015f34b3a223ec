"""Model folders: weights as safetensors and a JSON description, no pickle.

Every trained model pathpipe writes (the mil stage's AMIL, the segmentation
unet and its diffusion backbone) is a folder holding::

    <name>.safetensors   the state dict (tensors only)
    <name>.json          {"format": <kind>, "format_version": N,
                          "pathpipe_version": ..., <the kind's own keys>}

plus any files the kind adds (the AMIL's ``preprocessing.json``). A kind is
described once by a :class:`ModelFormat`; :func:`write_model_folder` and
:func:`read_model_folder` do the rest for every kind.

Writing: each file is written atomically, the JSON last. An existing JSON is
removed first, so a folder whose writing was interrupted (or is under way) has
no JSON and is refused by :func:`read_model_folder`, never read as a mix of an
old and a new model. Files other than the model's are left alone.

Reading: the files must exist, the JSON must name the expected format and
version, and the weights are read with :func:`safetensors.torch.load_file` only
(no ``torch.load``, so no pickle and nothing executed: what ``weights_only=True``
aims at, by construction). :func:`check_weights` compares them with the state
dict of the model the JSON describes before they are loaded.

torch and safetensors are imported inside the functions.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pathpipe.errors import StorageError

if TYPE_CHECKING:
    import torch

__all__ = [
    "ModelFormat",
    "check_weights",
    "read_model_folder",
    "state_problems",
    "write_model_folder",
]


@dataclass(frozen=True)
class ModelFormat:
    """One kind of model folder.

    Attributes
    ----------
    name : str
        Stem of the two files (``"model"`` gives ``model.safetensors`` and
        ``model.json``).
    format : str
        The JSON's ``"format"`` (e.g. ``"pathpipe-amil"``).
    version : int
        The JSON's ``"format_version"``; a folder of another version is refused.
    what : str
        How errors name the folder (``"AMIL model"``).
    """

    name: str
    format: str
    version: int
    what: str

    @property
    def weights(self) -> str:
        """File name of the weights."""
        return f"{self.name}.safetensors"

    @property
    def description(self) -> str:
        """File name of the JSON description."""
        return f"{self.name}.json"

    @property
    def files(self) -> tuple[str, str]:
        """``(weights, description)``."""
        return self.weights, self.description


def write_model_folder(
    path_dir: str | os.PathLike[str],
    kind: ModelFormat,
    state: Mapping[str, torch.Tensor],
    meta: Mapping[str, Any],
    *,
    files: Mapping[str, Callable[[Path], None]] | None = None,
) -> Path:
    """Write a model folder: weights, extra files, then the JSON description.

    Parameters
    ----------
    path_dir : path-like
        Created if missing.
    kind : ModelFormat
    state : mapping of str to torch.Tensor
        The state dict; tensors are copied to the CPU and made contiguous.
    meta : mapping
        JSON-ready keys stored after ``format``, ``format_version`` and
        ``pathpipe_version``.
    files : mapping of str to callable, optional
        Extra files: name -> function writing it (atomically) at the path given.

    Returns
    -------
    pathlib.Path
        ``path_dir``.
    """
    from safetensors.torch import save_file

    from pathpipe import __version__
    from pathpipe.io.storage import atomic_file, write_json

    root = Path(path_dir)
    root.mkdir(parents=True, exist_ok=True)
    (root / kind.description).unlink(missing_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    with atomic_file(root / kind.weights) as tmp:
        save_file(tensors, str(tmp))
    for name, write in (files or {}).items():
        write(root / name)
    write_json(
        root / kind.description,
        {
            "format": kind.format,
            "format_version": kind.version,
            "pathpipe_version": __version__,
            **meta,
        },
    )
    return root


def read_model_folder(
    path_dir: str | os.PathLike[str], kind: ModelFormat
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The JSON description and the weights of a model folder, after checking them.

    Returns
    -------
    meta : dict
        The whole JSON description.
    state : dict of str to torch.Tensor
        The weights, on the CPU.

    Raises
    ------
    StorageError
        A missing file, an unreadable JSON or one of another format or version,
        or unreadable weights; the message names the folder and what was expected.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    root = Path(path_dir)
    missing = [n for n in kind.files if not (root / n).is_file()]
    if missing:
        raise StorageError(
            f"{kind.what} folder {str(root)!r} lacks {', '.join(missing)}; "
            f"expected {' and '.join(kind.files)}"
        )
    meta_path = root / kind.description
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise StorageError(f"cannot read {meta_path}: {exc}") from exc
    if not isinstance(meta, dict) or meta.get("format") != kind.format:
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise StorageError(
            f"{meta_path} has format {found!r}; expected {kind.format!r} (a {kind.what} folder)"
        )
    if meta.get("format_version") != kind.version:
        raise StorageError(
            f"{meta_path} has format_version {meta.get('format_version')!r}; "
            f"expected {kind.version}"
        )
    weights_path = root / kind.weights
    try:
        state = load_file(str(weights_path))
    except (OSError, SafetensorError) as exc:
        raise StorageError(f"cannot read weights {weights_path}: {exc}") from exc
    return meta, state


def state_problems(
    expected: Mapping[str, torch.Tensor], found: Mapping[str, torch.Tensor]
) -> list[str]:
    """Differences between two state dicts (missing keys, unexpected keys, shapes), as text."""
    problems = []
    missing = sorted(set(expected) - set(found))
    extra = sorted(set(found) - set(expected))
    if missing:
        problems.append(f"{len(missing)} missing keys (e.g. {missing[:3]})")
    if extra:
        problems.append(f"{len(extra)} unexpected keys (e.g. {extra[:3]})")
    shapes = [
        f"{k}: {tuple(found[k].shape)} vs expected {tuple(v.shape)}"
        for k, v in expected.items()
        if k in found and found[k].shape != v.shape
    ]
    if shapes:
        problems.append(f"{len(shapes)} shape mismatches (e.g. {shapes[:2]})")
    return problems


def check_weights(
    expected: Mapping[str, torch.Tensor],
    found: Mapping[str, torch.Tensor],
    path_dir: str | os.PathLike[str],
    kind: ModelFormat,
) -> None:
    """Raise StorageError when the weights read do not fit the model the JSON describes."""
    problems = state_problems(expected, found)
    if problems:
        raise StorageError(
            f"weights {Path(path_dir) / kind.weights} do not fit the architecture in "
            f"{kind.description}: {'; '.join(problems)}"
        )
