"""Saving and loading AMIL models as model folders (:mod:`pathpipe.io.model_folder`).

An AMIL model folder holds::

    model.safetensors    the GatedAttentionMIL state dict
    model.json           {"format": "pathpipe-amil", "format_version": 1,
                          "pathpipe_version": ..., "architecture": GatedAttentionMIL.config,
                          "config": <caller's training config>, "preprocessing": bool}
    preprocessing.json   the FeaturePreprocessor, when one was saved

The unet's models are folders of the same kind (:mod:`pathpipe.segmentation.unet.io`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from pathpipe.device import resolve_device
from pathpipe.errors import ConfigError, StorageError
from pathpipe.io.model_folder import (
    ModelFormat,
    check_weights,
    read_model_folder,
    write_model_folder,
)
from pathpipe.mil.model import GatedAttentionMIL
from pathpipe.mil.preprocessing import FeaturePreprocessor

__all__ = ["AMIL_FILES", "AMIL_FORMAT", "PREPROCESSING_FILE", "load_amil", "save_amil"]

AMIL_FORMAT = ModelFormat("model", "pathpipe-amil", 1, "AMIL model")
AMIL_FILES = AMIL_FORMAT.files
PREPROCESSING_FILE = "preprocessing.json"


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
        The model folder (:func:`pathpipe.io.model_folder.write_model_folder`).
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
    if not isinstance(model, GatedAttentionMIL):
        raise ConfigError(f"model is a {type(model).__name__}; expected a GatedAttentionMIL")
    if not isinstance(config, dict):
        raise ConfigError(f"config is a {type(config).__name__}; expected a dict")
    if preprocessor is not None and not isinstance(preprocessor, FeaturePreprocessor):
        raise ConfigError(
            f"preprocessor is a {type(preprocessor).__name__}; expected a FeaturePreprocessor or None"
        )
    meta = {
        "architecture": model.config,
        "config": config,
        "preprocessing": preprocessor is not None,
    }
    files = {} if preprocessor is None else {PREPROCESSING_FILE: preprocessor.save}
    return write_model_folder(path_dir, AMIL_FORMAT, model.state_dict(), meta, files=files)


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
    root = Path(path_dir)
    meta, state = read_model_folder(root, AMIL_FORMAT)
    meta_path = root / AMIL_FORMAT.description
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
    check_weights(model.state_dict(), state, root, AMIL_FORMAT)
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
