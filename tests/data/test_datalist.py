"""Class frequencies read from a dataset's labels, as the training config computes them."""

from __future__ import annotations

import pytest
import torch
from monai.data import Dataset

from jcas_monai.data import dataset_class_frequencies


def _dataset(maps: dict[str, torch.Tensor]) -> Dataset:
    return Dataset([{"label": name} for name in maps], transform=lambda item: {"label": maps[item["label"]]})


def test_class_frequencies_over_valid_pixels():
    ds = _dataset({"a.png": torch.tensor([[0, 1], [1, 255]]), "b.png": torch.tensor([[2, 2], [0, 255]])})
    assert dataset_class_frequencies(ds, 3) == pytest.approx([2 / 6, 2 / 6, 2 / 6])


def test_a_label_value_out_of_range_names_its_file():
    ds = _dataset(
        {"/data/labels/final/a.png": torch.zeros(2, 2), "/data/labels/final/b.png": torch.full((2, 2), 7)}
    )
    with pytest.raises(ValueError, match=r"^/data/labels/final/b\.png: .*label value 7.*'num_classes' is 4"):
        dataset_class_frequencies(ds, 4)
