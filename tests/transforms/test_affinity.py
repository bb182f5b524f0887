"""Factorised affinity label: Y Y^T equals the dense pair label with ignore pairs masked."""

import numpy as np
import pytest
import torch

from jcas_monai.transforms import AffinityLabel, AffinityLabeld


def _label(seed: int, shape=(13, 17), num_classes: int = 4) -> np.ndarray:
    rng = np.random.default_rng(seed)
    label = rng.integers(0, num_classes, size=(1, *shape)).astype(np.uint8)
    label[rng.random(label.shape) < 0.2] = 255
    return label


def _dense_affinity(label: np.ndarray, grid: tuple[int, int], ignore: int = 255) -> np.ndarray:
    """Nearest resize by index arithmetic (source pixel floor(i * H / gh)), then the N x N pair label."""
    _, h, w = label.shape
    rows = np.floor(np.arange(grid[0]) * h / grid[0]).astype(int)
    cols = np.floor(np.arange(grid[1]) * w / grid[1]).astype(int)
    small = label[0][np.ix_(rows, cols)].reshape(-1)
    valid = small != ignore
    return ((small[:, None] == small[None, :]) & valid[:, None] & valid[None, :]).astype(np.float32)


@pytest.mark.parametrize(("seed", "grid"), [(0, (5, 6)), (1, (13, 17)), (2, (4, 4)), (3, (8, 3))])
def test_affinity_label_factorises_dense_pair_label(seed, grid):
    label = _label(seed)
    y = AffinityLabel(num_classes=4, grid_size=grid)(label)
    assert isinstance(y, np.ndarray) and y.dtype == np.float32 and y.shape == (4, *grid)
    flat = y.reshape(4, -1).T
    np.testing.assert_array_equal(flat @ flat.T, _dense_affinity(label, grid))
    assert set(np.unique(flat.sum(axis=1))) <= {0.0, 1.0}


def test_affinity_label_torch_input_and_square_grid():
    label = torch.from_numpy(_label(4).astype(np.int64))
    y = AffinityLabel(num_classes=4, grid_size=6)(label)
    assert type(y) is torch.Tensor and y.dtype == torch.float32 and y.shape == (4, 6, 6)
    flat = y.reshape(4, -1).T
    np.testing.assert_array_equal((flat @ flat.T).numpy(), _dense_affinity(label.numpy(), (6, 6)))


@pytest.mark.parametrize("bad", [4, 7, -1])
def test_affinity_label_rejects_unknown_values(bad):
    label = np.zeros((1, 4, 4), dtype=np.int64)
    label[0, 1, 1] = bad
    with pytest.raises(ValueError, match=f"value {bad} "):
        AffinityLabel(num_classes=4, grid_size=2)(label)


def test_affinity_label_rejects_non_channel_first():
    with pytest.raises(ValueError, match=r"\(1, H, W\)"):
        AffinityLabel(num_classes=2, grid_size=2)(np.zeros((4, 4), dtype=np.int64))


def test_affinity_labeld():
    label = _label(5)
    out = AffinityLabeld("label", num_classes=4, grid_size=(5, 6))({"label": label, "image": 1})
    assert out["label"] is label and out["image"] == 1
    np.testing.assert_array_equal(out["affinity"], AffinityLabel(4, (5, 6))(label))
    out = AffinityLabeld(["a", "b"], 4, 3, output_key=["ya", "yb"])({"a": label, "b": label})
    assert out["ya"].shape == out["yb"].shape == (4, 3, 3)
    with pytest.raises(ValueError, match="output keys"):
        AffinityLabeld(["a", "b"], 4, 3)
