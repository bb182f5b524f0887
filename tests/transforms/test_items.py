import pytest
import torch
from monai.data import MetaTensor

from jcas_monai.transforms import ReplaceItemsd


def test_replaces_an_existing_item_with_a_copy():
    clean = MetaTensor(torch.tensor([[[1, 2]]]), meta={"filename_or_obj": "clean.png"})
    data = {"label": MetaTensor(torch.tensor([[[3, 3]]])), "clean_label": clean}
    out = ReplaceItemsd("clean_label", "label")(data)
    assert torch.equal(out["label"], clean) and out["label"].meta["filename_or_obj"] == "clean.png"
    out["label"][0, 0, 0] = 0
    assert clean[0, 0, 0] == 1  # a copy: changing one item leaves the other as it was
    assert torch.equal(data["label"], torch.tensor([[[3, 3]]]))  # the input dictionary is not changed


def test_missing_key_leaves_the_item_or_raises():
    noisy = {"label": torch.tensor([[[3]]])}
    assert ReplaceItemsd("clean_label", "label", allow_missing_keys=True)(noisy)["label"] is noisy["label"]
    with pytest.raises(KeyError, match="clean_label"):
        ReplaceItemsd("clean_label", "label")(noisy)
    with pytest.raises(ValueError, match="2 keys but 1 names"):
        ReplaceItemsd(["a", "b"], "label")
