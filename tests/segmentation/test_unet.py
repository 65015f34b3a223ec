"""pathpipe.segmentation.unet: HV targets, HoVer-Net post-processing, training, DDPM pretraining, I/O.

Models are tiny (two levels of 8 and 16 channels) and runs a few dozen
iterations, so the file runs in well under a minute on two CPU cores.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pathpipe.errors import ConfigError, StorageError
from pathpipe.segmentation.annotations import AnnotatedTile
from pathpipe.segmentation.unet.config import ModelConfig
from pathpipe.segmentation.unet.postprocess import instance_types_from_probs, instances_from_maps
from pathpipe.segmentation.unet.targets import hv_maps, make_targets
from pathpipe.synthetic.tiles import SYNTHETIC_CLASSES, synthetic_annotated_tiles

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

TINY = ModelConfig(
    classes=SYNTHETIC_CLASSES,
    block_out_channels=(8, 16),
    layers_per_block=1,
    norm_num_groups=4,
    crop_size=64,
)


def _disc(shape: tuple[int, int], cy: float, cx: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def _best_iou(truth: np.ndarray, pred: np.ndarray) -> float:
    ids = np.unique(pred[truth])
    return max((_iou(truth, pred == i) for i in ids if i > 0), default=0.0)


@pytest.fixture(scope="module")
def tiles() -> list[AnnotatedTile]:
    return list(
        synthetic_annotated_tiles(n_tiles=4, tile_size=64, mpp=0.5, seed=1, slide_size=2048)
    )


@pytest.fixture(scope="module")
def diffusion_dir(tmp_path_factory: pytest.TempPathFactory, tiles: list[AnnotatedTile]) -> Path:
    from pathpipe.segmentation.unet.diffusion import pretrain_diffusion

    out = tmp_path_factory.mktemp("ddpm")
    rgb = np.stack([t.rgb for t in tiles])
    result = pretrain_diffusion(
        rgb, out, config=TINY, iterations=3, batch_size=2, seed=0, device="cpu", log_every=1
    )
    assert len(result.history) == 3 and np.isfinite(result.losses).all()
    return out


@pytest.fixture(scope="module")
def scratch_run(tmp_path_factory: pytest.TempPathFactory, tiles: list[AnnotatedTile]):
    from pathpipe.segmentation.unet.train import train_segmentation

    out = tmp_path_factory.mktemp("scratch")
    return train_segmentation(
        tiles, out, config=TINY, iterations=40, batch_size=2, lr=3e-3, device="cpu", log_every=1
    )


def _state(path: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(str(path))


# ----------------------------------------------------------------- config


def test_config_round_trip_and_validation() -> None:
    cfg = ModelConfig(classes=("a", "b"), block_out_channels=(16, 32, 64), timestep=5)
    again = ModelConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg
    assert cfg.downsample == 4 and cfg.n_types == 3
    with pytest.raises(ConfigError, match="unknown keys"):
        ModelConfig.from_dict({"classes": [], "widths": [8]})
    with pytest.raises(ConfigError, match="norm_num_groups"):
        ModelConfig(block_out_channels=(12, 24), norm_num_groups=8)
    with pytest.raises(ConfigError, match="crop_size"):
        ModelConfig(block_out_channels=(8, 16, 32), norm_num_groups=4, crop_size=30)
    with pytest.raises(ConfigError, match="timestep"):
        ModelConfig(timestep=1000)
    with pytest.raises(ConfigError, match="duplicates"):
        ModelConfig(classes=("a", "a"))


def test_light_names_do_not_import_torch() -> None:
    code = (
        "import sys\n"
        "import pathpipe\n"
        "from pathpipe.segmentation.unet.config import ModelConfig\n"
        "from pathpipe.segmentation.unet.postprocess import instances_from_maps\n"
        "from pathpipe.segmentation.unet.run import TrainingParams, train_unet\n"
        "from pathpipe.segmentation.unet.targets import hv_maps\n"
        "import pathpipe.cli.segmentation\n"
        "sys.exit(1 if 'torch' in sys.modules else 0)\n"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


# ----------------------------------------------------------------- targets


def test_hv_maps_rectangle_hand_computed() -> None:
    inst = np.zeros((7, 8), np.int32)
    inst[1:6, 2:7] = 4  # 5 × 5 square, centroid (3, 4)
    h, v = hv_maps(inst)
    np.testing.assert_allclose(h[3, 2:7], [-1, -0.5, 0, 0.5, 1])
    np.testing.assert_allclose(v[1:6, 4], [-1, -0.5, 0, 0.5, 1])
    np.testing.assert_allclose(h[1:6, 4], 0)  # centroid column
    assert h[inst == 0].max() == 0 and v[inst == 0].max() == 0


def test_hv_maps_disc_range_signs_and_background() -> None:
    inst = np.zeros((40, 50), np.int32)
    inst[_disc(inst.shape, 15, 20, 8)] = 1
    inst[_disc(inst.shape, 30, 38, 5)] = 7
    hv = hv_maps(inst)
    assert hv.shape == (2, 40, 50) and hv.dtype == np.float32
    assert hv.min() == -1 and hv.max() == 1
    assert hv[0, 15, 20] == 0 and hv[1, 15, 20] == 0  # centroid
    assert hv[0, 15, 13] < 0 < hv[0, 15, 27]  # left negative, right positive
    assert hv[1, 8, 20] < 0 < hv[1, 22, 20]  # top negative, bottom positive
    assert not hv[:, inst == 0].any()
    np.testing.assert_allclose(hv[0, 30, 33], -1)  # each nucleus normalised on its own
    np.testing.assert_allclose(hv[0, 30, 43], 1)


def test_make_targets_without_types() -> None:
    inst = np.zeros((8, 8), np.int32)
    inst[2:5, 2:5] = 1
    t = make_targets(AnnotatedTile("x", np.zeros((8, 8, 3), np.uint8), inst, None))
    assert t["fg"].sum() == 9 and t["has_types"] is False and not t["type"].any()


# ----------------------------------------------------------------- post-processing


def test_instances_from_perfect_maps_split_touching_discs() -> None:
    shape = (64, 72)
    a = _disc(shape, 32, 24, 12)
    b = _disc(shape, 32, 45, 11) & ~a  # touches a over several rows
    assert (a[:, :-1] & b[:, 1:]).sum() >= 5
    inst = np.zeros(shape, np.int32)
    inst[a], inst[b] = 1, 2
    pred = instances_from_maps(inst > 0, hv_maps(inst))
    assert pred.dtype == np.int32 and pred.max() == 2
    assert _best_iou(a, pred) > 0.8 and _best_iou(b, pred) > 0.8


def test_instances_from_maps_min_area_and_empty() -> None:
    fg = np.zeros((30, 30))
    fg[5:8, 5:8] = 1  # 9 px
    assert instances_from_maps(fg, np.zeros((2, 30, 30)), min_area=10).max() == 0
    assert instances_from_maps(fg, np.zeros((2, 30, 30)), min_area=5).max() == 1
    with pytest.raises(ConfigError, match="expected"):
        instances_from_maps(fg, np.zeros((2, 31, 30)))


def test_instance_types_from_probs_mean_without_background() -> None:
    inst = np.array([[1, 1, 0], [2, 2, 2]], np.int32)
    probs = np.zeros((3, 2, 3))
    probs[0] = 0.5  # background never wins
    probs[1] = [[0.4, 0.2, 0.0], [0.1, 0.1, 0.1]]
    probs[2] = [[0.1, 0.1, 0.0], [0.3, 0.3, 0.3]]
    types, conf = instance_types_from_probs(inst, probs)
    np.testing.assert_array_equal(types, [0, 1])
    np.testing.assert_allclose(conf, [0.3, 0.3], rtol=1e-6)
    assert conf.dtype == np.float32
    t0, c0 = instance_types_from_probs(inst, probs[:1])  # model without classes
    np.testing.assert_array_equal(t0, [-1, -1])
    assert np.isnan(c0).all()


# ----------------------------------------------------------------- training


def test_training_from_scratch_loss_falls(scratch_run) -> None:
    losses = scratch_run.losses
    assert len(losses) == 40 and np.isfinite(losses).all()
    assert losses[-5:].mean() < 0.8 * losses[:5].mean()
    assert scratch_run.n_trainable == scratch_run.n_params - _unused_params()
    meta = json.loads((scratch_run.path / "model.json").read_text())
    assert meta["config"]["classes"] == list(SYNTHETIC_CLASSES)
    assert meta["extra"]["training"]["strategy"] == "scratch"


def _unused_params() -> int:
    from pathpipe.segmentation.unet.model import build_model

    unet = build_model(TINY).unet
    return sum(p.numel() for m in (unet.conv_norm_out, unet.conv_out) for p in m.parameters())


def test_training_is_deterministic(tmp_path: Path, tiles: list[AnnotatedTile]) -> None:
    from pathpipe.segmentation.unet.train import train_segmentation

    runs = [
        train_segmentation(
            tiles,
            tmp_path / f"r{k}",
            config=TINY,
            iterations=3,
            batch_size=2,
            seed=3,
            device="cpu",
            log_every=1,
            fraction=0.5,
        )
        for k in range(2)
    ]
    assert [h["loss"] for h in runs[0].history] == [h["loss"] for h in runs[1].history]
    a, b = (_state(r.path / "model.safetensors") for r in runs)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    meta = json.loads((runs[0].path / "model.json").read_text())
    assert meta["extra"]["training"]["n_tiles"] == 2


def test_classes_and_mpp_from_folder_are_checked(tmp_path: Path, tiles) -> None:
    from pathpipe.segmentation.annotations import write_annotated_dir
    from pathpipe.segmentation.unet.train import train_segmentation

    folder = write_annotated_dir(tmp_path / "ann", tiles, classes=SYNTHETIC_CLASSES, mpp=0.25)
    with pytest.raises(ConfigError, match="mpp"):
        train_segmentation(folder, tmp_path / "m", config=TINY, iterations=1, device="cpu")
    other = ModelConfig.from_dict({**TINY.to_dict(), "classes": ["x", "y"], "mpp": 0.25})
    with pytest.raises(ConfigError, match="classes"):
        train_segmentation(folder, tmp_path / "m", config=other, iterations=1, device="cpu")
    no_classes = ModelConfig.from_dict({**TINY.to_dict(), "classes": [], "mpp": 0.25})
    with pytest.raises(ConfigError, match="training tiles have type"):
        train_segmentation(
            list(tiles), tmp_path / "m", config=no_classes, iterations=1, device="cpu"
        )
    result = train_segmentation(
        folder, tmp_path / "m", config=no_classes, iterations=1, batch_size=1, device="cpu"
    )
    meta = json.loads((result.path / "model.json").read_text())
    assert meta["config"]["classes"] == list(SYNTHETIC_CLASSES)


def test_strategy_needs_init(tmp_path: Path, tiles) -> None:
    from pathpipe.segmentation.unet.train import train_segmentation

    with pytest.raises(ConfigError, match="init"):
        train_segmentation(tiles, tmp_path, config=TINY, strategy="linear", device="cpu")
    with pytest.raises(ConfigError, match="strategy"):
        train_segmentation(tiles, tmp_path, config=TINY, strategy="heads", device="cpu")


def test_linear_strategy_trains_only_heads(tmp_path: Path, tiles, diffusion_dir: Path) -> None:
    from pathpipe.segmentation.unet.model import build_model
    from pathpipe.segmentation.unet.train import set_strategy, train_segmentation

    model = build_model(TINY)
    params = set_strategy(model, "linear")
    head = {id(p) for p in model.head_parameters()}
    assert {id(p) for p in params} == head
    assert sum(p.requires_grad for p in model.parameters()) == len(head) == 6

    result = train_segmentation(
        tiles,
        tmp_path / "lin",
        init=diffusion_dir,
        strategy="linear",
        iterations=3,
        batch_size=2,
        device="cpu",
    )
    assert result.n_trainable == sum(p.numel() for p in model.head_parameters())
    before = _state(diffusion_dir / "diffusion.safetensors")
    after = _state(result.path / "model.safetensors")
    assert all(np.array_equal(before[k], after[f"unet.{k}"]) for k in before)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)  # train_segmentation's seed: the heads' initial weights
        initial = build_model(TINY).state_dict()
    for key in ("fg_head.weight", "hv_head.weight", "type_head.weight"):
        assert not np.array_equal(initial[key].numpy(), after[key])


def test_decoder_strategy_freezes_encoder(tmp_path: Path, tiles, diffusion_dir: Path) -> None:
    from pathpipe.segmentation.unet.train import train_segmentation

    result = train_segmentation(
        tiles,
        tmp_path / "dec",
        config=TINY,
        init=diffusion_dir,
        strategy="decoder",
        iterations=3,
        batch_size=2,
        device="cpu",
    )
    before = _state(diffusion_dir / "diffusion.safetensors")
    after = _state(result.path / "model.safetensors")
    encoder = ("conv_in.", "time_embedding.", "down_blocks.", "mid_block.")
    enc = [k for k in before if k.startswith(encoder)]
    up = [k for k in before if k.startswith("up_blocks.")]
    assert enc and up
    assert all(np.array_equal(before[k], after[f"unet.{k}"]) for k in enc)
    assert any(not np.array_equal(before[k], after[f"unet.{k}"]) for k in up)


def test_init_with_other_architecture_is_refused(tmp_path: Path, tiles, diffusion_dir) -> None:
    from pathpipe.segmentation.unet.train import train_segmentation

    wider = ModelConfig.from_dict({**TINY.to_dict(), "block_out_channels": [8, 32]})
    with pytest.raises(ConfigError, match="architecture"):
        train_segmentation(
            tiles, tmp_path, config=wider, init=diffusion_dir, strategy="full", device="cpu"
        )
    with pytest.raises(StorageError, match=r"diffusion\.json"):
        train_segmentation(
            tiles, tmp_path, config=TINY, init=tmp_path, strategy="full", device="cpu"
        )


# ----------------------------------------------------------------- I/O and prediction


def test_save_load_round_trip_gives_identical_predictions(scratch_run, tiles) -> None:
    from pathpipe.segmentation.unet.io import load_model
    from pathpipe.segmentation.unet.predict import predict_maps

    model, config = load_model(scratch_run.path)
    again, _ = load_model(scratch_run.path)
    rgb = np.stack([t.rgb for t in tiles[:2]])
    a = predict_maps(model, rgb, device="cpu")
    b = predict_maps(again, rgb, device="cpu")
    for key in ("fg", "hv", "type"):
        np.testing.assert_array_equal(a[key], b[key])
    assert config == ModelConfig.from_dict(
        json.loads((scratch_run.path / "model.json").read_text())["config"]
    )


def test_load_errors(tmp_path: Path, scratch_run) -> None:
    from safetensors.numpy import save_file

    from pathpipe.segmentation.unet.io import load_model

    with pytest.raises(StorageError, match=r"model\.safetensors"):
        load_model(tmp_path / "nowhere")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model.json").write_text((scratch_run.path / "model.json").read_text())
    state = _state(scratch_run.path / "model.safetensors")
    state.pop("fg_head.bias")
    save_file(state, str(broken / "model.safetensors"))
    with pytest.raises(StorageError, match="missing keys"):
        load_model(broken)


def test_predict_tiles_odd_size_and_white(scratch_run, tiles) -> None:
    from pathpipe.segmentation.unet.io import load_model
    from pathpipe.segmentation.unet.predict import predict_tiles

    model, config = load_model(scratch_run.path)
    rgb = np.full((2, 100, 100, 3), 255, np.uint8)
    rgb[0, :64, :64] = tiles[0].rgb
    out = predict_tiles(model, config, rgb, batch_size=1)
    assert len(out) == 2
    for p in out:
        assert p.inst.shape == (100, 100) and p.inst.dtype == np.int32
        assert p.types.shape == p.confidence.shape == (int(p.inst.max()),)
        assert set(np.unique(p.inst)) == set(range(p.n + 1))
        assert ((p.types >= 0) & (p.types < len(config.classes))).all()
    single = predict_tiles(model, config, rgb[1])  # one (H, W, 3) tile
    assert len(single) == 1 and single[0].inst.shape == (100, 100)
    with pytest.raises(ConfigError, match="uint8"):
        predict_tiles(model, config, rgb.astype(np.float32))


def test_iter_cohort_tiles_from_stores(tmp_path: Path) -> None:
    import zarr

    from pathpipe.segmentation.unet.data import iter_cohort_tiles

    paths = []
    for k, n in enumerate((3, 1)):
        path = tmp_path / f"s{k}" / "tiles.zarr"
        root = zarr.open_group(str(path), mode="w")
        root.create_array("tiles", data=np.full((n, 40, 40, 3), 10 * (k + 1), np.uint8))
        root.attrs["pathpipe"] = {"stage": "tiling", "complete": True, "params": {"mpp": 0.5}}
        paths.append(path)
    crops = list(iter_cohort_tiles(paths, n=40, seed=0, crop_size=32))
    assert len(crops) == 40 and all(c.shape == (32, 32, 3) and c.dtype == np.uint8 for c in crops)
    values = [int(c[0, 0, 0]) for c in crops]
    assert set(values) == {10, 20} and values.count(10) > values.count(20)
    again = [int(c[0, 0, 0]) for c in iter_cohort_tiles(paths, n=40, seed=0, crop_size=32)]
    assert again == values
    with pytest.raises(StorageError):
        list(iter_cohort_tiles([tmp_path / "missing.zarr"], n=1, seed=0))

    from pathpipe.segmentation.unet.diffusion import pretrain_diffusion

    coarse = ModelConfig.from_dict({**TINY.to_dict(), "mpp": 1.0})
    with pytest.raises(ConfigError, match="mpp"):
        pretrain_diffusion(paths, tmp_path / "d", config=coarse, iterations=1, device="cpu")


# ----------------------------------------------------------------- GPU


@pytest.mark.gpu
def test_cuda_amp_train_and_predict(tmp_path: Path, tiles, diffusion_dir) -> None:
    from pathpipe.segmentation.unet.io import load_model
    from pathpipe.segmentation.unet.predict import predict_tiles
    from pathpipe.segmentation.unet.train import train_segmentation

    result = train_segmentation(
        tiles,
        tmp_path / "gpu",
        init=diffusion_dir,
        strategy="full",
        iterations=5,
        batch_size=2,
        device="cuda",
        amp=True,
        log_every=1,
    )
    assert result.device.startswith("cuda") and np.isfinite(result.losses).all()
    model, config = load_model(result.path, device="cuda")
    rgb = np.stack([t.rgb for t in tiles])
    out = predict_tiles(model, config, rgb, device="cuda", amp=True)
    assert [p.inst.shape for p in out] == [(64, 64)] * len(tiles)
    cpu = predict_tiles(model, config, rgb, device="cpu")
    assert [p.inst.shape for p in cpu] == [(64, 64)] * len(tiles)
