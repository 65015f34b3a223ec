"""pathpipe.mil on CUDA: the same AMIL gives the CPU's probabilities and attention.

Bags as in tests/mil/test_mil.py (20 standard-normal features; in class-1 bags a
random 30–60 % of the tiles shifted by +1.5 in the first 3). Skipped without a
CUDA device.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")

from pathpipe.mil.train import predict_amil, train_amil  # noqa: E402

N_FEATURES, N_INFORMATIVE, SHIFT = 20, 3, 1.5
# float32 on both devices (TF32 off): slide probabilities and tile attention
ATOL = 1e-5


@pytest.fixture(scope="module", autouse=True)
def _one_thread(torch_one_thread):
    """torch on one thread for this module (see conftest.torch_one_thread)."""


def _bags(n: int, seed: int) -> tuple[list[np.ndarray], np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % 2)
    bags = []
    for y in labels:
        k = int(rng.integers(5, 41))
        x = rng.normal(size=(k, N_FEATURES)).astype(np.float32)
        if y == 1:
            w = rng.choice(k, max(1, round(rng.uniform(0.3, 0.6) * k)), replace=False)
            x[w, :N_INFORMATIVE] += SHIFT
        bags.append(x)
    return bags, labels


@pytest.mark.gpu
def test_cuda_predictions_equal_cpu_predictions() -> None:
    train, y = _bags(24, 0)
    test, _ = _bags(40, 2)
    model, _ = train_amil(train, y, epochs=15, seed=0, device="cpu")
    p_cpu, a_cpu = predict_amil(model, test, device="cpu")
    tf32 = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        p_gpu, a_gpu = predict_amil(model, test, device="cuda")
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32
    assert next(model.parameters()).is_cuda
    np.testing.assert_allclose(p_gpu, p_cpu, rtol=0, atol=ATOL)
    assert len(a_gpu) == len(a_cpu)
    for g, c in zip(a_gpu, a_cpu, strict=True):
        np.testing.assert_allclose(g, c, rtol=0, atol=ATOL)
    assert ((p_gpu >= 0.5) == (p_cpu >= 0.5)).all()
