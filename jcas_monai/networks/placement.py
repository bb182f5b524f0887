"""Placing a network for training: device and memory format, avoiding a known CPU convolution fault.

With torch 2.13.0+cpu on AVX2 kernels, the backward pass (weight gradient) of a channels-last 1x1
convolution of stride 2 with fewer than 8 input channels never returns with two threads and corrupts
memory with one ("double free or corruption"). The DeepLab-v2 backbone has such a convolution when its
``width`` is below 8 (the shortcut into ``layer2``). A network holding one is kept in the contiguous
format on CPU, which trains correctly, at the cost of channels-last speed.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

__all__ = ["channels_last_faults", "place_network"]

MIN_STRIDED_POINTWISE_CHANNELS = 8
"""The fewest input channels a strided 1x1 convolution may have to train in channels-last on CPU."""


def channels_last_faults(network: nn.Module) -> list[str]:
    """Names of the convolutions of ``network`` whose channels-last CPU backward is faulty: 1x1 kernel,
    a stride above 1, fewer than :data:`MIN_STRIDED_POINTWISE_CHANNELS` input channels."""
    return [
        name
        for name, module in network.named_modules()
        if isinstance(module, nn.Conv2d)
        and module.kernel_size == (1, 1)
        and max(module.stride) > 1
        and module.in_channels < MIN_STRIDED_POINTWISE_CHANNELS
    ]


def place_network(
    network: nn.Module, device: torch.device | str, memory_format: torch.memory_format = torch.channels_last
) -> nn.Module:
    """``network.to(device, memory_format=memory_format)``, except that a network with a convolution listed by
    :func:`channels_last_faults` stays in the contiguous format on CPU (with a warning naming the layers)."""
    device = torch.device(device)
    if device.type == "cpu" and memory_format == torch.channels_last:
        faults = channels_last_faults(network)
        if faults:
            warnings.warn(
                f"channels-last memory format not used on CPU: the 1x1 strided convolution(s) {', '.join(faults)} "
                f"have fewer than {MIN_STRIDED_POINTWISE_CHANNELS} input channels, whose channels-last backward "
                "hangs or corrupts memory with AVX2 kernels (raise backbone#width to 8 or more for channels-last)",
                stacklevel=2,
            )
            memory_format = torch.contiguous_format
    return network.to(device, memory_format=memory_format)
