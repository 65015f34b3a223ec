"""pathpipe.segmentation.unet quality: a briefly trained unet detects nuclei; CUDA predicts as the CPU does.

The model is the tiny one of tests/segmentation/test_unet.py (two levels of 8 and 16
channels), trained from scratch on one CPU thread for 120 iterations on 8
generated 64-px tiles (0.5 µm/px, seed 1) and scored on 8 held-out generated
128-px tiles (seed 2, 132 nuclei) with :mod:`pathpipe.segmentation.metrics` (centroids
paired within 3 µm).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pathpipe.segmentation.annotations import AnnotatedTile
from pathpipe.segmentation.tile_counts import evaluate_tile, summarise
from pathpipe.segmentation.unet.config import ModelConfig
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
MPP = 0.5
RADIUS_PX = 3.0 / MPP  # the 3 µm of `pathpipe segmentation evaluate`
# Measured detection F1 on the held-out tiles (2-core CPU, torch 2.13): 0.938 for the
# seed used here; seeds 1-3 of the training gave 0.844, 0.922, 0.906. Untrained: 0.052.
MIN_F1 = 0.75
MAX_UNTRAINED_F1 = 0.2
MIN_HV_R = 0.5
# CUDA against the CPU in float32 (TF32 off): per-pixel probabilities and HV maps.
MAP_ATOL = 1e-4


@pytest.fixture(scope="module", autouse=True)
def _one_thread(torch_one_thread):
    """torch on one thread for this module (see conftest.torch_one_thread)."""


@pytest.fixture(scope="module")
def held_out() -> list[AnnotatedTile]:
    return list(
        synthetic_annotated_tiles(n_tiles=8, tile_size=128, mpp=MPP, seed=2, slide_size=2048)
    )


@pytest.fixture(scope="module")
def trained_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from pathpipe.segmentation.unet.train import train_segmentation

    tiles = list(
        synthetic_annotated_tiles(n_tiles=8, tile_size=64, mpp=MPP, seed=1, slide_size=2048)
    )
    out = tmp_path_factory.mktemp("unet")
    train_segmentation(
        tiles, out, config=TINY, iterations=120, batch_size=4, lr=3e-3, seed=0, device="cpu"
    )
    return out


def _type_map(pred) -> np.ndarray:
    """Per-pixel type (1-based, 0 background) of a PredictedTile."""
    lut = np.zeros(pred.n + 1, np.int64)
    lut[1:] = np.where(pred.types >= 0, pred.types + 1, 0)
    return lut[pred.inst]


def _scores(tiles: list[AnnotatedTile], preds: list) -> dict:
    counts = [
        evaluate_tile(
            t.inst_map,
            p.inst,
            true_type=t.type_map,
            pred_type=_type_map(p),
            match_radius_px=RADIUS_PX,
        )
        for t, p in zip(tiles, preds, strict=True)
    ]
    return summarise(counts, classes=SYNTHETIC_CLASSES)


@pytest.mark.slow
def test_briefly_trained_unet_detects_nuclei(trained_dir: Path, held_out) -> None:
    from pathpipe.segmentation.unet.io import load_model
    from pathpipe.segmentation.unet.model import build_model
    from pathpipe.segmentation.unet.predict import predict_tiles

    model, config = load_model(trained_dir)
    rgb = np.stack([t.rgb for t in held_out])
    s = _scores(held_out, predict_tiles(model, config, rgb, device="cpu"))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        untrained = build_model(TINY)
    u = _scores(held_out, predict_tiles(untrained, TINY, rgb, device="cpu"))
    print(
        f"trained: F1 {s['f1']:.3f} (precision {s['precision']:.3f}, recall {s['recall']:.3f}), "
        f"Dice {s['dice']:.3f}, PQ {s['pq']:.3f}, type accuracy {s['type_accuracy']:.3f}; "
        f"untrained: F1 {u['f1']:.3f}"
    )
    assert s["n_true"] == 132 and s["f1"] >= MIN_F1
    assert u["f1"] <= MAX_UNTRAINED_F1  # the threshold separates a model that learnt nothing


@pytest.mark.slow
def test_briefly_trained_unet_regresses_the_hv_maps(trained_dir: Path, held_out) -> None:
    """Predicted HV maps follow the true ones on nuclear pixels (Pearson r per channel).

    Detection F1 hardly sees the HV branch on these sparse nuclei (a blob without
    a marker stays one nucleus); this catches negated or swapped HV maps.
    """
    from pathpipe.segmentation.unet.io import load_model
    from pathpipe.segmentation.unet.predict import predict_maps
    from pathpipe.segmentation.unet.targets import hv_maps

    model, _ = load_model(trained_dir)
    hv = predict_maps(model, np.stack([t.rgb for t in held_out]), device="cpu")["hv"]
    r = []
    for axis in (0, 1):
        got = np.concatenate([h[axis][t.inst_map > 0] for h, t in zip(hv, held_out, strict=True)])
        want = np.concatenate([hv_maps(t.inst_map)[axis][t.inst_map > 0] for t in held_out])
        r.append(float(np.corrcoef(got, want)[0, 1]))
    print(f"HV maps, Pearson r on nuclear pixels: horizontal {r[0]:.3f}, vertical {r[1]:.3f}")
    assert min(r) >= MIN_HV_R


@pytest.mark.gpu
def test_cuda_predictions_equal_cpu_predictions(trained_dir: Path, held_out) -> None:
    """Maps and nuclei of the same model on CUDA and on the CPU.

    Float32 on both (autocast off, TF32 off): probabilities and HV maps within
    ``MAP_ATOL``; nuclei: at least 99.9 % of the pixels in the same
    foreground/background state, every nucleus paired (centroids within 1 px,
    detection F1 >= 0.99) with the same type, and on tiles whose instance maps
    are identical the confidences within 1e-4. With autocast (the default on
    CUDA, bfloat16) looser: mean probability difference <= 0.02 and detection
    F1 >= 0.9 against the CPU's nuclei (not measured here: no GPU was lent).
    """
    from pathpipe.segmentation.unet.io import load_model
    from pathpipe.segmentation.unet.predict import predict_maps, predict_tiles

    cpu_model, config = load_model(trained_dir, device="cpu")
    gpu_model, _ = load_model(trained_dir, device="cuda")
    rgb = np.stack([t.rgb for t in held_out])
    tf32 = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        cpu_maps = predict_maps(cpu_model, rgb, device="cpu")
        gpu_maps = predict_maps(gpu_model, rgb, device="cuda", amp=False)
        cpu = predict_tiles(cpu_model, config, rgb, device="cpu")
        gpu = predict_tiles(gpu_model, config, rgb, device="cuda", amp=False)
        amp_maps = predict_maps(gpu_model, rgb, device="cuda", amp=True)
        amp = predict_tiles(gpu_model, config, rgb, device="cuda", amp=True)
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32
    assert next(gpu_model.parameters()).is_cuda
    for key in ("fg", "hv", "type"):
        assert gpu_maps[key].shape == cpu_maps[key].shape, key
        np.testing.assert_allclose(gpu_maps[key], cpu_maps[key], rtol=0, atol=MAP_ATOL, err_msg=key)

    same = _nuclei_agreement(cpu, gpu)
    assert same["foreground_agreement"] >= 0.999
    assert same["f1"] >= 0.99 and same["type_accuracy"] == 1.0
    identical = [(c, g) for c, g in zip(cpu, gpu, strict=True) if np.array_equal(c.inst, g.inst)]
    assert identical, "no tile has the same instance map on CUDA as on the CPU"
    for c, g in identical:
        np.testing.assert_array_equal(g.types, c.types)
        np.testing.assert_allclose(g.confidence, c.confidence, rtol=0, atol=1e-4)

    for key in ("fg", "type"):
        assert float(np.abs(amp_maps[key] - cpu_maps[key]).mean()) <= 0.02, key
    assert _nuclei_agreement(cpu, amp)["f1"] >= 0.9


def _nuclei_agreement(a: list, b: list) -> dict:
    """Detection F1 / type accuracy of ``b``'s nuclei against ``a``'s, and pixel agreement."""
    counts = [
        evaluate_tile(
            p.inst, q.inst, true_type=_type_map(p), pred_type=_type_map(q), match_radius_px=1.0
        )
        for p, q in zip(a, b, strict=True)
    ]
    s = summarise(counts, classes=SYNTHETIC_CLASSES)
    fg = np.mean([((p.inst > 0) == (q.inst > 0)).mean() for p, q in zip(a, b, strict=True)])
    return {**s, "foreground_agreement": float(fg)}
