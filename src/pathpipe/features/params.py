"""Parameters of the features stage (config block ``features:``)."""

from __future__ import annotations

from dataclasses import dataclass

from pathpipe.errors import ConfigError
from pathpipe.features.registry import FAMILIES
from pathpipe.params import check_params, param

__all__ = ["CHANNELS", "FeatureParams"]

#: The intensity channels: ``h`` hematoxylin OD x 100, ``grey`` luma 0-255.
CHANNELS = ("h", "grey")


@dataclass(frozen=True, kw_only=True)
class FeatureParams:
    """Parameters of the features stage (config block ``features:``).

    ``workers`` is the job's threads in the workflow (``features.workers``).
    """

    families: tuple[str, ...] = param(
        FAMILIES, "nuclear feature families to compute", choices=FAMILIES
    )
    channels: tuple[str, ...] = param(
        CHANNELS,
        "intensity channels of the intensity, texture and chromatin families "
        "(h: hematoxylin optical density x 100; grey: luma 0-255)",
        choices=CHANNELS,
    )
    bin_width: dict[str, float] = param(
        {"h": 10.0, "grey": 8.0},
        "PyRadiomics fixed bin width (binWidth) per channel, in the channel's unit",
        gt=0,
        items=CHANNELS,
    )
    bin_count: dict[str, int] = param(
        {},
        "PyRadiomics fixed bin count (binCount) per channel; a channel listed here "
        "ignores bin_width",
        ge=1,
        items=CHANNELS,
        values="int",
    )
    per_phenotype: tuple[str, ...] = param(
        (), "phenotypes whose nuclei also get their own median/std tile columns"
    )
    aggregate_border_nuclei: bool = param(
        False,
        "include nuclei cut by the tile edge in the median/std aggregates (counts, "
        "densities and graphs always include them)",
    )
    graph: str = param("knn", "cell graph of each tile", choices=("knn", "delaunay"))
    graph_k: int = param(5, "neighbours per nucleus of the kNN cell graph", ge=1)
    workers: int | None = param(None, "worker processes (default: the CPU count)", kind="int", ge=1)

    def __post_init__(self) -> None:
        check_params(self, "features")
        if not self.families:
            raise ConfigError(
                f"features.families=[]; expected a non-empty subset of {list(FAMILIES)}"
            )
        if not self.channels:
            raise ConfigError(
                f"features.channels=[]; expected a non-empty subset of {list(CHANNELS)}"
            )
        for c in self.channels:
            if c not in self.bin_count and not self.bin_width.get(c, 0) > 0:
                raise ConfigError(
                    f"features.bin_width.{c}={self.bin_width.get(c)!r}; expected a number > 0 "
                    f"(or set features.bin_count.{c})"
                )

    def binning(self) -> dict[str, dict]:
        """The ``bin_width`` and ``bin_count`` settings of the binned families."""
        bc = {c: self.bin_count[c] for c in self.channels if c in self.bin_count}
        bw = {c: float(self.bin_width[c]) for c in self.channels if c not in bc}
        return {"bin_width": bw or None, "bin_count": bc or None}
