"""Saving and loading AMIL models: safetensors weights + JSON, no pickle.

An AMIL model directory holds::

    model.safetensors    the GatedAttentionMIL state dict
    model.json           {"format": "pathpipe-amil", "format_version": 1,
                          "pathpipe_version": ..., "architecture": GatedAttentionMIL.config,
                          "config": <caller's training config>, "preprocessing": bool}
    preprocessing.json   the FeaturePreprocessor, when one was saved

Weights are read with :func:`safetensors.torch.load_file` only (as in
:mod:`pathpipe.segmentation.unet.io`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from pathpipe.errors import ConfigError, StorageError
from pathpipe.mil.model import GatedAttentionMIL
from pathpipe.mil.preprocessing import FeaturePreprocessor
from pathpipe.segmentation.unet.device import resolve_device

__all__ = ["AMIL_FILES", "PREPROCESSING_FILE", "load_amil", "save_amil"]

AMIL_FILES = ("model.safetensors", "model.json")
PREPROCESSING_FILE = "preprocessing.json"
_FORMAT = "pathpipe-amil"
_FORMAT_VERSION = 1


def save_amil(
    path_dir: str | os.PathLike[str],
    model: GatedAttentionMIL,
    *,
    config: dict[str, Any],
    preprocessor: FeaturePreprocessor | None = None,
) -> Path:
    """Write ``model.safetensors``, ``model.json`` and ``preprocessing.json``.

    Parameters
    ----------
    path_dir : path-like
        Created if missing; other files in it are left alone. Each file is
        written atomically.
    model : GatedAttentionMIL
    config : dict
        JSON-ready description of the run (training options, class names,
        feature names, history…), returned as is by :func:`load_amil`.
    preprocessor : FeaturePreprocessor, optional
        The fitted tile-feature preprocessing the model expects.

    Returns
    -------
    pathlib.Path
        ``path_dir``.
    """
    from safetensors.torch import save_file

    from pathpipe import __version__
    from pathpipe.io.storage import atomic_file, write_json

    if not isinstance(model, GatedAttentionMIL):
        raise ConfigError(f"model is a {type(model).__name__}; expected a GatedAttentionMIL")
    if not isinstance(config, dict):
        raise ConfigError(f"config is a {type(config).__name__}; expected a dict")
    if preprocessor is not None and not isinstance(preprocessor, FeaturePreprocessor):
        raise ConfigError(
            f"preprocessor is a {type(preprocessor).__name__}; expected a FeaturePreprocessor or None"
        )
    root = Path(path_dir)
    root.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    with atomic_file(root / AMIL_FILES[0]) as tmp:
        save_file(tensors, str(tmp))
    if preprocessor is not None:
        preprocessor.save(root / PREPROCESSING_FILE)
    write_json(
        root / AMIL_FILES[1],
        {
            "format": _FORMAT,
            "format_version": _FORMAT_VERSION,
            "pathpipe_version": __version__,
            "architecture": model.config,
            "config": config,
            "preprocessing": preprocessor is not None,
        },
    )
    return root


def load_amil(
    path_dir: str | os.PathLike[str], *, device: str | torch.device = "cpu"
) -> tuple[GatedAttentionMIL, dict[str, Any], FeaturePreprocessor | None]:
    """Read a model written by :func:`save_amil`.

    Parameters
    ----------
    path_dir : path-like
    device : str or torch.device
        ``"auto"``, ``"cpu"`` or ``"cuda[:n]"``.

    Returns
    -------
    model : GatedAttentionMIL
        In eval mode, on ``device``.
    config : dict
        The ``config`` given to :func:`save_amil`.
    preprocessor : FeaturePreprocessor or None

    Raises
    ------
    StorageError
        Missing files, an unreadable or foreign ``model.json``, or weights that
        do not fit the stored architecture.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    root = Path(path_dir)
    missing = [n for n in AMIL_FILES if not (root / n).is_file()]
    if missing:
        raise StorageError(
            f"AMIL model directory {str(root)!r} lacks {', '.join(missing)}; "
            f"expected {' and '.join(AMIL_FILES)}"
        )
    meta_path = root / AMIL_FILES[1]
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise StorageError(f"cannot read {meta_path}: {exc}") from exc
    if not isinstance(meta, dict) or meta.get("format") != _FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise StorageError(f"{meta_path} has format {found!r}; expected {_FORMAT!r}")
    if meta.get("format_version") != _FORMAT_VERSION:
        raise StorageError(
            f"{meta_path} has format_version {meta.get('format_version')!r}; "
            f"expected {_FORMAT_VERSION}"
        )
    arch = meta.get("architecture")
    try:
        if not isinstance(arch, dict):
            raise ConfigError(f"architecture is {arch!r}; expected a dict")
        model = GatedAttentionMIL(
            arch["n_features"],
            hidden=arch["hidden"],
            dropout=arch["dropout"],
            n_classes=arch["n_classes"],
        )
    except (ConfigError, KeyError) as exc:
        raise StorageError(f"{meta_path}: invalid architecture: {exc}") from exc
    weights_path = root / AMIL_FILES[0]
    try:
        state = load_file(str(weights_path))
    except (OSError, SafetensorError) as exc:
        raise StorageError(f"cannot read weights {weights_path}: {exc}") from exc
    expected = model.state_dict()
    problems = [
        f"{k}: {'missing' if k not in state else f'shape {tuple(state[k].shape)}'} "
        f"(expected {tuple(v.shape)})"
        for k, v in expected.items()
        if k not in state or state[k].shape != v.shape
    ] + [f"{k}: unexpected" for k in state if k not in expected]
    if problems:
        raise StorageError(
            f"weights {weights_path} do not fit the architecture in {AMIL_FILES[1]}: "
            f"{'; '.join(problems[:3])}"
            + (f" (and {len(problems) - 3} more)" if len(problems) > 3 else "")
        )
    model.load_state_dict(state, strict=True)
    preprocessor = None
    if meta.get("preprocessing"):
        pre_path = root / PREPROCESSING_FILE
        if not pre_path.is_file():
            raise StorageError(
                f"{meta_path} says the model has feature preprocessing but {pre_path} is missing"
            )
        preprocessor = FeaturePreprocessor.load(pre_path)
    config = meta.get("config")
    if not isinstance(config, dict):
        raise StorageError(f"{meta_path}: config is {type(config).__name__}; expected a dict")
    return model.to(resolve_device(device)).eval(), config, preprocessor
