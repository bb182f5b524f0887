"""The bundle's loading pipeline on PNG, JPEG and NIfTI, grayscale and RGB, through a datalist."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from conftest import TRAIN
from monai.bundle import ConfigParser
from monai.transforms import Compose
from PIL import Image

from jcas_monai.data import load_split

H, W = 24, 40  # not square, so a transposed image would be caught


def _label() -> np.ndarray:
    label = np.zeros((H, W), np.uint8)
    label[2:6, 30:37] = 1  # top right: must stay top right after loading
    label[15:20, 3:9] = 2
    label[0, 0] = 255
    return label


def _image(channels: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 200, (H, W, channels), dtype=np.uint8)
    img[2:6, 30:37] = 255  # bright where the label has class 1
    return img[..., 0] if channels == 1 else img


def _write(folder, kind: str, channels: int) -> str:
    (folder / "images").mkdir()
    (folder / "labels").mkdir()
    img, label = _image(channels), _label()
    if kind == "nifti":
        nib.save(nib.Nifti1Image(img, np.eye(4)), folder / "images" / "a.nii.gz")
        nib.save(nib.Nifti1Image(label, np.eye(4)), folder / "labels" / "a.nii.gz")
        names = ("images/a.nii.gz", "labels/a.nii.gz")
    else:
        suffix = ".jpg" if kind == "jpeg" else ".png"
        Image.fromarray(img).save(folder / "images" / f"a{suffix}", quality=100)
        Image.fromarray(label).save(folder / "labels" / "a.png")
        names = (f"images/a{suffix}", "labels/a.png")
    item = {"image": names[0], "label": names[1]}
    datalist = folder / "datalist.json"
    datalist.write_text(json.dumps({"training": [item], "validation": [item]}))
    return str(datalist)


def _pipeline(in_channels: int, spatial_size=(H, W)) -> Compose:
    parser = ConfigParser()
    parser.read_config(TRAIN)
    parser.update({"in_channels": in_channels, "spatial_size": list(spatial_size)})
    return Compose(parser.get_parsed_content("load_transforms"))


@pytest.mark.parametrize("kind", ["png", "jpeg", "nifti"])
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("in_channels", [1, 3])
def test_datalist_items_load_channel_first_in_file_orientation(tmp_path, kind, channels, in_channels):
    datalist = _write(tmp_path, kind, channels)
    item = _pipeline(in_channels)(load_split(datalist, "training")[0])
    image, label = item["image"], item["label"]
    assert image.shape == (in_channels, H, W)
    assert label.shape == (1, H, W)
    assert np.array_equal(np.asarray(label[0]), _label())  # values, ignore pixels and orientation kept
    bright = np.asarray(image[0])[2:6, 30:37].mean()
    assert bright > np.asarray(image[0]).mean() + 1.0  # the bright patch is where the file has it


def test_resizing_keeps_label_values(tmp_path):
    datalist = _write(tmp_path, "png", 3)
    item = _pipeline(3, spatial_size=(48, 80))(load_split(datalist, "training")[0])
    assert item["image"].shape == (3, 48, 80) and item["label"].shape == (1, 48, 80)
    assert set(np.unique(np.asarray(item["label"]))) == {0, 1, 2, 255}
