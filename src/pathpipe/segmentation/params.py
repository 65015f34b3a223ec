"""Parameters of the segmentation stage (config block ``segmentation:``).

Each option is declared once, with its default, bounds and help
(:func:`pathpipe.params.param`); the command-line options of ``pathpipe
segmentation run|evaluate`` and the config schema are held to these fields. The
classical method's own block, ``segmentation.classical``, is
:class:`pathpipe.segmentation.classical.ClassicalParams`.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

from pathpipe.errors import ConfigError
from pathpipe.params import check_params, param
from pathpipe.segmentation.classical import ClassicalParams

__all__ = ["DEFAULT_CLASSES", "METHODS", "STAINS", "SegmentationParams"]

DEFAULT_CLASSES: tuple[str, ...] = ("tumour", "lymphocyte", "other")
"""Classes of the built-in phenotype rule,
:func:`pathpipe.segmentation.phenotype.heuristic_phenotypes`."""

#: Segmentation methods (``segmentation.method``).
METHODS = ("classical", "unet")
#: Stain vectors (``segmentation.stain``): per-slide Macenko or the fixed Ruifrok & Johnston.
STAINS = ("macenko", "fixed")

_CLASS_NAME = re.compile(r"[A-Za-z0-9_-]+")
_DEVICE = re.compile(r"auto|cpu|cuda(:[0-9]+)?")


@dataclass(frozen=True, kw_only=True)
class SegmentationParams:
    """Parameters of the segmentation stage (config block ``segmentation:``).

    Attributes
    ----------
    method : {"classical", "unet"}
    classes : tuple of str
        Phenotype names (letters, digits, ``_`` and ``-``). ``classical``
        without a classifier needs "tumour" and "lymphocyte" (and uses
        "other"); a classifier or model must have been trained with the same
        list.
    classical : ClassicalParams
        Thresholds and sizes of the classical method (config block
        ``segmentation.classical``; its options are flat on the command line).
    stain : {"macenko", "fixed"}
        Per-slide stain vectors (Macenko, falling back to the fixed vectors when
        estimation fails) or the fixed Ruifrok & Johnston vectors.
    stain_tiles : int
        Tiles sampled (seeded) for the stain estimate.
    phenotype_model : str or None
        JSON of a :class:`pathpipe.segmentation.classifier.PhenotypeClassifier` (classical).
    model : str or None
        Directory of a trained :mod:`pathpipe.segmentation.unet` model (unet).
    device : str
        "auto" (GPU when present), "cpu", "cuda" or "cuda:<i>" (unet).
    batch_size : int
        Tiles per model batch (unet) or per worker task (classical).
    amp : bool
        Mixed precision on GPU (unet).
    workers : int or None
        Worker processes of the classical method (default: CPU count; the
        workflow passes the rule's threads).
    seed : int
        Seeds the sample of tiles for the stain estimate (the workflow passes
        the top-level ``seed``).
    """

    method: str = param(
        "classical",
        "classical (deconvolution, threshold, watershed) or unet (a trained model)",
        choices=METHODS,
    )
    classes: tuple[str, ...] = param(DEFAULT_CLASSES, "phenotype names, comma-separated")
    classical: ClassicalParams = field(default_factory=ClassicalParams)
    stain: str = param(
        "macenko",
        "stain vectors: per-slide macenko (fixed when it fails) or fixed Ruifrok-Johnston",
        choices=STAINS,
    )
    stain_tiles: int = param(32, "tiles sampled (seeded) for the Macenko estimate", ge=1)
    phenotype_model: str | None = param(
        None,
        "classifier JSON from 'pathpipe segmentation train-phenotypes' (classical; "
        "none: the built-in rule)",
        kind="str",
    )
    model: str | None = param(
        None, "model directory from 'pathpipe segmentation train' (unet)", kind="str"
    )
    device: str = param("auto", "device of the unet method: auto, cpu, cuda or cuda:N")
    batch_size: int = param(8, "tiles per model batch (unet) or per worker task (classical)", ge=1)
    amp: bool = param(True, "mixed precision on GPU (unet)")
    workers: int | None = param(
        None, "worker processes of the classical method (none: CPU count)", kind="int", ge=1
    )
    seed: int = param(0, "seed of the stain-tile sample (config: the top-level seed)", ge=0)

    def __post_init__(self) -> None:
        if not isinstance(self.classical, ClassicalParams):
            raise ConfigError(
                f"segmentation.classical is a {type(self.classical).__name__}; "
                "expected ClassicalParams"
            )
        check_params(self, "segmentation")
        classes = list(self.classes)
        if not classes or len(set(classes)) != len(classes):
            raise ConfigError(
                f"segmentation.classes={classes!r}; expected a non-empty list of distinct names"
            )
        bad = [c for c in classes if not _CLASS_NAME.fullmatch(c)]
        if bad:
            raise ConfigError(
                f"segmentation.classes={classes!r}; expected names of letters, digits, "
                f"'_' and '-' (not {bad})"
            )
        if not _DEVICE.fullmatch(self.device):
            raise ConfigError(
                f"segmentation.device={self.device!r}; expected auto, cpu, cuda or cuda:N"
            )
        if self.method == "unet" and not self.model:
            raise ConfigError(
                f"segmentation.model={self.model!r} with segmentation.method='unet'; "
                "expected the directory of a model trained with 'pathpipe segmentation train'"
            )
        if self.method == "classical" and self.phenotype_model is None:
            missing = {"tumour", "lymphocyte"} - set(classes)
            if missing:
                raise ConfigError(
                    f"segmentation.classes={classes!r} lacks {sorted(missing)}; expected "
                    "tumour, lymphocyte (and other), the classes of the built-in phenotype "
                    "rule, or a classifier for other classes ('pathpipe segmentation "
                    "train-phenotypes', then segmentation.phenotype_model)"
                )

    def as_dict(self) -> dict[str, Any]:
        """The parameters as plain data (lists for tuples), as recorded in provenance."""
        d = asdict(self)
        d["classes"] = list(self.classes)
        return d
