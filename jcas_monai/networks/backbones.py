"""DeepLab-v2 backbone: a dilated ResNet with output stride 8.

Chen et al., "DeepLab: Semantic Image Segmentation with Deep Convolutional Nets, Atrous Convolution,
and Fully Connected CRFs", TPAMI 2018. JCAS (Guo & Yuan, MICCAI 2022) uses DeepLab-v2 ResNet-101 with
layer3 dilated by 2 and layer4 by 4, ImageNet initialisation and frozen BatchNorm affine parameters.

Parameter names follow the usual ResNet layout (``conv1``, ``bn1``, ``layer1`` .. ``layer4``), so an
ImageNet ResNet state dict saved by the user loads with :func:`load_imagenet_weights`; nothing is ever
downloaded.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

__all__ = ["DeepLabV2", "load_imagenet_weights"]

_LAYOUTS: dict[int, tuple[str, tuple[int, int, int, int]]] = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
}


class _BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_ch: int, ch: int, stride: int, dilation: int, downsample: nn.Module | None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, ch, 3, stride, padding=dilation, dilation=dilation, bias=False)
        self.bn1 = nn.BatchNorm2d(ch)
        self.conv2 = nn.Conv2d(ch, ch, 3, 1, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(ch)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class _Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_ch: int, ch: int, stride: int, dilation: int, downsample: nn.Module | None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, ch, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(ch)
        self.conv2 = nn.Conv2d(ch, ch, 3, stride, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(ch)
        self.conv3 = nn.Conv2d(ch, ch * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(ch * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class DeepLabV2(nn.Module):
    """Dilated ResNet encoder at output stride 8 returning the four stage outputs.

    Args:
        depth: ResNet depth, one of 18, 34, 50, 101.
        in_channels: image channels (3 for RGB, 1 for grayscale).
        width: channels of the stem and of ``layer1`` (64 in a standard ResNet). Smaller values give a
            light encoder for CPU training; ImageNet weights need the standard 64.
        freeze_bn_affine: keep BatchNorm weight and bias fixed (the DeepLab-v2 recipe).
        frozen_stages: number of leading stages not optimised: 0 none, 1 the stem, 2 the stem and layer1,
            3 up to layer2 (the authors' JCAS code trains layer3, layer4 and the heads only).
        pretrained_weights: a user-supplied ImageNet ResNet state dict file (see
            :func:`load_imagenet_weights`); nothing is downloaded.

    Forward:
        ``x`` of shape ``(B, in_channels, H, W)`` -> list ``[layer1, layer2, layer3, layer4]`` with
        spatial size ``(H/4, W/4)`` for layer1 and ``(H/8, W/8)`` for the others (rounded up).
        ``feature_channels`` gives their channel counts.
    """

    def __init__(
        self,
        depth: int = 101,
        in_channels: int = 3,
        width: int = 64,
        freeze_bn_affine: bool = False,
        frozen_stages: int = 0,
        pretrained_weights: str | Path | None = None,
    ) -> None:
        super().__init__()
        if depth not in _LAYOUTS:
            raise ValueError(f"DeepLabV2 depth must be one of {sorted(_LAYOUTS)}, got {depth}")
        kind, blocks = _LAYOUTS[depth]
        block = _BasicBlock if kind == "basic" else _Bottleneck
        self.depth = depth
        self.conv1 = nn.Conv2d(in_channels, width, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self._in_ch = width
        self.layer1 = self._make_layer(block, width, blocks[0], stride=1, dilation=1)
        self.layer2 = self._make_layer(block, width * 2, blocks[1], stride=2, dilation=1)
        self.layer3 = self._make_layer(block, width * 4, blocks[2], stride=1, dilation=2)
        self.layer4 = self._make_layer(block, width * 8, blocks[3], stride=1, dilation=4)
        self.feature_channels: tuple[int, ...] = tuple(width * m * block.expansion for m in (1, 2, 4, 8))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        if pretrained_weights:
            load_imagenet_weights(self, pretrained_weights)
        if freeze_bn_affine:
            for m in self.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.weight.requires_grad_(False)
                    m.bias.requires_grad_(False)
        stages = [(self.conv1, self.bn1), (self.layer1,), (self.layer2,), (self.layer3,)]
        for stage in stages[:frozen_stages]:
            for module in stage:
                module.requires_grad_(False)

    def _make_layer(self, block: type, ch: int, n: int, stride: int, dilation: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self._in_ch != ch * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self._in_ch, ch * block.expansion, 1, stride, bias=False),
                nn.BatchNorm2d(ch * block.expansion),
            )
        layers = [block(self._in_ch, ch, stride, dilation, downsample)]
        self._in_ch = ch * block.expansion
        layers += [block(self._in_ch, ch, 1, dilation, None) for _ in range(n - 1)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        c1 = self.layer1(x)
        c2 = self.layer2(c1)
        c3 = self.layer3(c2)
        return [c1, c2, c3, self.layer4(c3)]


def load_imagenet_weights(backbone: nn.Module, path: str | Path, ignore: Sequence[str] = ("fc.",)) -> None:
    """Load a user-supplied ImageNet ResNet state dict into a :class:`DeepLabV2` backbone.

    The file is a ``torch.save`` of a ResNet state dict (torchvision layout, optionally wrapped in
    ``{"state_dict": ...}`` or prefixed by ``module.``). The classifier (``fc.*``) is skipped. When the
    backbone takes one input channel and the file has three, the stem filters are summed over colour.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file does not fit the backbone; the message names the file and the first keys.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pretrained weights file {path} does not exist (config key 'pretrained_weights')")
    state = torch.load(path, map_location="cpu", weights_only=True)
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    state = {k.removeprefix("module."): v for k, v in state.items()}
    state = {k: v for k, v in state.items() if not k.startswith(tuple(ignore))}
    own = backbone.state_dict()
    stem = own.get("conv1.weight")
    if stem is not None and "conv1.weight" in state and state["conv1.weight"].shape[1] != stem.shape[1]:
        if stem.shape[1] != 1:
            raise ValueError(f"{path}: stem has {state['conv1.weight'].shape[1]} input channels, backbone {stem.shape[1]}")
        state["conv1.weight"] = state["conv1.weight"].sum(dim=1, keepdim=True)
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mismatched = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or mismatched:
        raise ValueError(
            f"{path} does not fit a DeepLabV2 ResNet-{getattr(backbone, 'depth', '?')}: "
            f"missing {missing[:3]}, unexpected {unexpected[:3]}, shape mismatch {mismatched[:3]}"
        )
    backbone.load_state_dict(state)
