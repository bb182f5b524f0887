import pytest
import torch
from monai.data import MetaTensor

from jcas_monai.transforms import As2D, As2Dd


def test_nifti_style_channel_last_is_moved_first():
    img = torch.arange(2 * 5 * 3, dtype=torch.float32).reshape(1, 2, 5, 3)
    out = As2D(3)(img)
    assert out.shape == (3, 2, 5)
    assert torch.equal(out[1], img[0, ..., 1])


def test_channel_conversion():
    gray = torch.rand(1, 4, 6)
    assert torch.equal(As2D(3)(gray), gray.repeat(3, 1, 1))
    rgba = torch.rand(4, 4, 6)
    assert torch.allclose(As2D(1)(rgba), rgba[:3].mean(0, keepdim=True))
    assert As2D(None)(rgba[:3]).shape == (3, 4, 6)


def test_label_must_be_single_channel_and_errors_name_the_file():
    rgb = MetaTensor(torch.zeros(3, 4, 6), meta={"filename_or_obj": "/data/labels/frame001.png"})
    with pytest.raises(ValueError, match="frame001.png.*one channel"):
        As2D(label=True)(rgb)
    with pytest.raises(ValueError, match="2D"):
        As2D(3)(torch.zeros(1, 2, 3, 4, 5))
    d = As2Dd(["image", "label"], channels=3, label_keys="label")(
        {"image": torch.rand(1, 4, 6), "label": torch.zeros(1, 4, 6, 1)}
    )
    assert d["image"].shape == (3, 4, 6) and d["label"].shape == (1, 4, 6)
