"""ReconstructionParams: defaults, bounds and the mask source, with messages naming the key."""

from __future__ import annotations

import pytest

from pathpipe.errors import ConfigError
from pathpipe.params import schema_properties
from pathpipe.reconstruction.params import SUBSETS, ReconstructionParams, mask_source


def test_defaults_are_valid_and_the_default_subset_is_listed() -> None:
    p = ReconstructionParams()
    assert p.subset in SUBSETS and p.subset == "contour"
    assert p.max_rmse_um < p.max_correspondence_um  # otherwise the RMSE flag never fires
    assert p.voxel_sizes == (128.0, 64.0)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("tissue", ("tissue", None)),
        ("phenotype:tumour", ("phenotype", "tumour")),
        ("annotation:Tumor_core", ("annotation", "Tumor_core")),
    ],
)
def test_mask_sources(text: str, expected: tuple) -> None:
    assert mask_source(text) == expected
    assert ReconstructionParams(mask=text).mask == text


@pytest.mark.parametrize(
    "text", ["", "tumour", "phenotype", "phenotype:", "annotation:a b", "tissue:x"]
)
def test_bad_mask_source_names_the_forms(text: str) -> None:
    with pytest.raises(
        ConfigError, match=r"reconstruction\.mask=.*expected 'tissue', 'phenotype:<class>'"
    ):
        ReconstructionParams(mask=text)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"subset": "band"}, r"reconstruction\.subset='band'; expected a string \(one of"),
        ({"working_mpp": 0}, r"reconstruction\.working_mpp=0\.0; expected a number > 0"),
        ({"voxel_sizes": ()}, r"reconstruction\.voxel_sizes=\(\); expected a non-empty list"),
        ({"voxel_sizes": (64.0, -1.0)}, "each > 0"),
        ({"voxel_sizes": (16.0, 64.0)}, "expected sizes from coarse to fine"),
        ({"band_half_width": 0.6}, r"band_half_width=0\.6; expected a number > 0 and <= 0\.5"),
        ({"min_fitness": 1.5}, r"min_fitness=1\.5"),
        ({"angle_step": 0}, r"angle_step=0\.0"),
    ],
)
def test_bad_values_name_the_key(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ReconstructionParams(**kwargs)


def test_lists_of_numbers_are_normalised_and_in_the_schema() -> None:
    assert ReconstructionParams(voxel_sizes=[96, 32]).voxel_sizes == (96.0, 32.0)
    prop = schema_properties(ReconstructionParams)["voxel_sizes"]
    assert prop == {
        "type": "array",
        "items": {"type": "number", "exclusiveMinimum": 0},
        "minItems": 1,
        "default": [128.0, 64.0],
    }
