"""Network placement: strided 1x1 convolutions with few input channels keep a CPU network contiguous."""

from __future__ import annotations

import warnings

import pytest
import torch
from conftest import REPO, TRAIN
from monai.bundle import ConfigParser
from torch import nn

from jcas_monai.networks import DeepLabV2, channels_last_faults, place_network


def _is_channels_last(conv: nn.Conv2d) -> bool:
    """Whether the weight is laid out channels-last (a 1x1 kernel's layout is the same in both formats)."""
    return conv.weight.is_contiguous(memory_format=torch.channels_last) and not conv.weight.is_contiguous()


def test_faults_are_exactly_the_strided_pointwise_convolutions_with_few_inputs():
    net = nn.Sequential(
        nn.Conv2d(4, 8, 1, stride=2),  # listed
        nn.Conv2d(4, 8, 1, stride=1),  # not strided
        nn.Conv2d(4, 8, 3, stride=2),  # not 1x1
        nn.Conv2d(8, 8, 1, stride=2),  # enough input channels
        nn.Sequential(nn.Conv2d(7, 8, 1, stride=(1, 2))),  # listed: strided along one axis
    )
    assert channels_last_faults(net) == ["0", "4.0"]


@pytest.mark.parametrize("width", [4, 5, 7])
def test_narrow_backbone_has_its_layer2_shortcut_listed(width):
    assert channels_last_faults(DeepLabV2(depth=18, width=width)) == ["layer2.0.downsample.0"]


@pytest.mark.parametrize("depth", [18, 50])
def test_default_width_backbone_has_no_fault(depth):
    assert channels_last_faults(DeepLabV2(depth=depth, width=8)) == []


def test_faulty_network_stays_contiguous_on_cpu_with_a_warning():
    net = DeepLabV2(depth=18, width=4)
    with pytest.warns(UserWarning, match="layer2.0.downsample.0"):
        placed = place_network(net, "cpu", torch.channels_last)
    assert not any(_is_channels_last(m) for m in placed.modules() if isinstance(m, nn.Conv2d))


def test_sound_network_goes_channels_last_without_a_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        placed = place_network(DeepLabV2(depth=18, width=8), "cpu", torch.channels_last)
        assert _is_channels_last(placed.conv1) and _is_channels_last(placed.layer2[0].conv1)
        contiguous = place_network(DeepLabV2(depth=18, width=4), "cpu", torch.contiguous_format)
    assert not _is_channels_last(contiguous.conv1)


@pytest.mark.parametrize("overlay", [[], ["configs/peers/coteaching.json"]])
def test_bundle_training_network_is_placed_through_the_guard(overlay):
    parser = ConfigParser()
    parser.read_config([TRAIN, *(str(REPO / o) for o in overlay)])
    parser.update({"backbone#width": 4, "backbone#depth": 18, "backbone#pretrained_weights": None, "device": "cpu"})
    with pytest.warns(UserWarning, match="channels-last memory format not used"):
        network = parser.get_parsed_content("network")
    assert not any(_is_channels_last(m) for m in network.modules() if isinstance(m, nn.Conv2d))
