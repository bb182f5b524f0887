"""What the benchmark runs: training settings, the JCAS and baseline training steps, the pair-wise step.

A *setting* is a plain JSON-able dict (network config in MONAI bundle syntax, loss config, optimiser,
batch and image size, memory format), so the same workload can be rebuilt in a fresh process for memory
measurements and recorded verbatim in the benchmark report. Two settings exist: the paper's (DeepLab-v2
ResNet-101, 256 x 320, 64 x 64 grid, batch 3; method notes sections 2 and 7) and the bundle default, read
from ``bundle/configs/train.json`` so the benchmark follows the bundle.
"""

from __future__ import annotations

import contextlib
import copy
import io
import os
import tempfile
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from monai.bundle import ConfigParser

from jcas_monai.benchmark.dense import dense_dar_and_affinity_bce
from jcas_monai.losses import AffinityBCELoss, NoiseTransitionMatrix, class_frequencies
from jcas_monai.networks import DAR, place_network
from jcas_monai.transforms import AffinityLabel

__all__ = [
    "INFERENCE_RUNTIMES",
    "VARIANTS",
    "bundle_setting",
    "make_inference",
    "make_pairwise_step",
    "make_train_step",
    "make_workload",
    "paper_setting",
    "variant_setting",
]

IGNORE_INDEX = 255
VARIANTS = ("baseline", "jcas")
"""``baseline``: the same network without affinity heads and DAR, cross-entropy on both branches;
``jcas``: every term of the JCAS stage (DAR, affinity BCE on both branches, class and affinity correction,
log-det, CALC)."""

_STAGE2 = {"class_correction": True, "affinity_correction": True, "logdet_weight": 0.5, "calc_weight": 0.01}


def paper_setting(depth: int = 101, width: int = 64) -> dict[str, Any]:
    """The paper's training setting (method notes sections 2 and 7), JCAS stage.

    DeepLab-v2 ResNet-``depth`` (frozen BatchNorm affine), affinity channels (128, 256), class heads with
    dilations (6, 12, 18, 24), 256 x 320 input, 64 x 64 grid, batch 3, SGD (momentum 0.9, weight decay
    5e-4), channels-last memory format (the bundle's). ``depth``/``width`` other than 101/64 give a lighter
    stand-in (recorded in the setting's name).
    """
    name = "paper" if (depth, width) == (101, 64) else f"paper (ResNet-{depth}, width {width})"
    return {
        "name": name,
        "network": {
            "_target_": "jcas_monai.networks.JCASNet",
            "backbone": {
                "_target_": "jcas_monai.networks.DeepLabV2",
                "depth": depth,
                "in_channels": 3,
                "width": width,
                "freeze_bn_affine": True,
            },
            "num_classes": 4,
            "affinity_channels": [128, 256],
            "use_affinity": True,
            "use_dar": True,
            "grid_size": [64, 64],
            "eval_grid_size": [32, 32],
            "head_dilations": [6, 12, 18, 24],
        },
        "loss": {
            "_target_": "jcas_monai.losses.JCASLoss",
            "num_classes": 4,
            "seg_weights": [1.0, 0.1],
            "aff_weights": [0.1, 1.0],
            "use_dar": True,
            **_STAGE2,
        },
        "optimizer": {"_target_": "torch.optim.SGD", "lr": 1e-3, "momentum": 0.9, "weight_decay": 5e-4},
        "batch_size": 3,
        "spatial_size": [256, 320],
        "in_channels": 3,
        "memory_format": "channels_last",
    }


def _resolve(parser: ConfigParser, id: str) -> Any:
    """The config item ``id`` with every ``@`` reference replaced by its (recursively resolved) content."""
    raw = parser.get(id)
    if isinstance(raw, str) and raw.startswith("@"):
        return _resolve(parser, raw[1:])
    if isinstance(raw, str) and raw.startswith("$"):
        return parser.get_parsed_content(id)
    if isinstance(raw, dict):
        return {k: _resolve(parser, f"{id}#{k}") for k in raw}
    if isinstance(raw, list):
        return [_resolve(parser, f"{id}#{i}") for i in range(len(raw))]
    return raw


def bundle_setting(config_file: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The bundle's default training setting, read from its ``train.json``, JCAS stage.

    Network: ``network_def``; loss: ``loss_def`` with the ``stage2`` settings applied (``class_freq`` is
    taken from the benchmark labels); optimiser: ``optimizer#_target_`` with ``learning_rate`` and
    ``weight_decay``; ``batch_size``, and ``crop_size`` (the training input, reported as
    ``spatial_size``; the network's ``grid_size`` comes with ``network_def``).

    Args:
        config_file: path of the bundle's ``train.json``.
        overrides: config ids to set before reading (for example ``{"batch_size": 2}`` in tests).
    """
    parser = ConfigParser()
    parser.read_config(config_file)
    for key, value in (overrides or {}).items():
        parser[key] = value
    parser["loss_def"]["class_freq"] = None
    loss = {**_resolve(parser, "loss_def"), **_resolve(parser, "stage2")}
    loss.pop("class_freq")
    return {
        "name": "bundle default",
        "network": _resolve(parser, "network_def"),
        "loss": loss,
        "optimizer": {
            "_target_": parser["optimizer"]["_target_"],
            "lr": _resolve(parser, "learning_rate"),
            "weight_decay": _resolve(parser, "weight_decay"),
        },
        "batch_size": _resolve(parser, "batch_size"),
        "spatial_size": _resolve(parser, "crop_size"),
        "in_channels": _resolve(parser, "in_channels"),
        "memory_format": str(_resolve(parser, "memory_format")).removeprefix("torch."),
    }


def variant_setting(setting: dict[str, Any], variant: str) -> dict[str, Any]:
    """``setting`` for one of :data:`VARIANTS`: ``jcas`` unchanged; ``baseline`` without affinity heads, DAR,
    affinity losses, correction, log-det and CALC (cross-entropy on both branches, same seg weights)."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}, expected one of {VARIANTS}")
    setting = copy.deepcopy(setting)
    if variant == "baseline":
        setting["network"].update(use_affinity=False, use_dar=False)
        setting["loss"].update(
            aff_weights=[0.0, 0.0],
            use_dar=False,
            class_correction=False,
            affinity_correction=False,
            logdet_weight=0.0,
            calc_weight=0.0,
        )
    return setting


def _instantiate(config: dict[str, Any], **kwargs: Any) -> Any:
    return ConfigParser({"x": {**copy.deepcopy(config), **kwargs}}).get_parsed_content("x")


def _network(setting: dict[str, Any], device: torch.device, training: bool) -> torch.nn.Module:
    """The network of ``setting`` on ``device``, in the setting's memory format, placed as the bundle places it:
    for training through :func:`~jcas_monai.networks.place_network`, for inference directly."""
    memory_format = getattr(torch, setting.get("memory_format", "contiguous_format"))
    network = _instantiate(setting["network"])
    if training:
        return place_network(network, device, memory_format).train()
    return network.to(device, memory_format=memory_format).eval()


def _blob_labels(batch: int, size: tuple[int, int], num_classes: int, gen: torch.Generator) -> torch.Tensor:
    """Blocky random class maps ``(B, 1, H, W)`` uint8 with about 1% ignore pixels."""
    h, w = size
    coarse = torch.randint(0, num_classes, (batch, 1, max(1, h // 16), max(1, w // 16)), generator=gen)
    label = F.interpolate(coarse.float(), size=(h, w), mode="nearest").to(torch.uint8)
    label[torch.rand(label.shape, generator=gen) < 0.01] = IGNORE_INDEX
    return label


def make_train_step(setting: dict[str, Any], device: torch.device, seed: int = 0) -> Callable[[], None]:
    """One training iteration of ``setting``: forward, loss, backward, optimiser step, gradients cleared.

    Inputs (random image, blocky label, its affinity label on the grid) are made once, on ``device``.
    """
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net_cfg = setting["network"]
    num_classes = net_cfg["num_classes"]
    size = tuple(setting["spatial_size"])
    image = torch.randn(setting["batch_size"], setting["in_channels"], *size, generator=gen)
    label = _blob_labels(setting["batch_size"], size, num_classes, gen)
    affinity = torch.stack([AffinityLabel(num_classes, net_cfg["grid_size"])(lab) for lab in label])
    class_freq = class_frequencies(label, num_classes, IGNORE_INDEX).tolist()
    network = _network(setting, device, training=True)
    loss_fn = _instantiate(setting["loss"], class_freq=class_freq).to(device)
    params = [p for p in network.parameters() if p.requires_grad] + list(loss_fn.parameters())
    optimizer = _instantiate(setting["optimizer"], params=params)
    image = image.to(device)
    target = {"label": label.to(device), "affinity": affinity.to(device)}

    def step() -> None:
        loss = loss_fn(network(image), target)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


INFERENCE_RUNTIMES = ("eager", "torchscript", "onnxruntime")
"""How the inference latency is measured: the PyTorch module, ``torch.jit.script`` of it (what
``monai.bundle ckpt_export`` writes) and ONNX Runtime on its ``monai.bundle onnx_export`` form (CPU only;
needs ``requirements-deploy.txt``)."""


def make_inference(
    setting: dict[str, Any], device: torch.device, size: tuple[int, int], runtime: str = "eager"
) -> Callable[[], None]:
    """Eval-mode, no-grad prediction of one ``size`` frame by the network of ``setting`` in ``runtime``
    (one of :data:`INFERENCE_RUNTIMES`).

    Raises:
        ValueError: unknown ``runtime``, or ``onnxruntime`` on a device other than the CPU.
        ImportError: ``onnxruntime`` without the deploy extra installed.
    """
    if runtime not in INFERENCE_RUNTIMES:
        raise ValueError(f"unknown inference runtime {runtime!r}, expected one of {INFERENCE_RUNTIMES}")
    torch.manual_seed(0)
    network = _network(setting, device, training=False)
    image = torch.randn(1, setting["in_channels"], *size, device=device)
    if runtime == "onnxruntime":
        return _onnxruntime_inference(network, image)
    model = torch.jit.script(network) if runtime == "torchscript" else network

    def infer() -> None:
        with torch.no_grad():
            model(image)

    return infer


def _onnxruntime_inference(network: torch.nn.Module, image: torch.Tensor) -> Callable[[], None]:
    """An ONNX Runtime session (CPU, torch's thread count) on the network exported as ``onnx_export`` does."""
    import onnxruntime
    from monai.networks.utils import convert_to_onnx

    if image.device.type != "cpu":
        raise ValueError(f"the onnxruntime latency is measured on the CPU, not {image.device}")
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.inter_op_num_threads = 1
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.onnx")
        with contextlib.redirect_stdout(io.StringIO()):  # the exporter prints its progress
            convert_to_onnx(network, [image], filename=path, use_trace=False)
        session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: image.numpy()}

    def infer() -> None:
        session.run(None, feed)

    return infer


PairwiseStep = Callable[[], tuple[torch.Tensor, ...]]


def make_pairwise_step(
    grid: int,
    impl: str,
    device: torch.device,
    batch: int = 3,
    num_classes: int = 4,
    channels: int = 256,
    seed: int = 0,
) -> PairwiseStep:
    """DAR and the corrected affinity BCE of one branch on a ``grid x grid`` grid, forward and backward.

    ``impl``: ``"factorised"`` (:class:`~jcas_monai.networks.DAR` + :class:`~jcas_monai.losses.AffinityBCELoss`)
    or ``"dense"`` (:func:`~jcas_monai.benchmark.dense.dense_dar_and_affinity_bce`, one ``B x N x N``
    affinity shared by both). The step returns ``P_dar``, the loss and the gradients of
    ``sum(P_dar * U) + loss`` (``U`` a fixed random tensor) with respect to the logits, the features and the
    ``T_A`` parameter, so the two implementations can be compared entry by entry.
    """
    if impl not in ("factorised", "dense"):
        raise ValueError(f"unknown pairwise implementation {impl!r}, expected 'factorised' or 'dense'")
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, num_classes, grid, grid, generator=gen)
    features = torch.randn(batch, channels, grid, grid, generator=gen)
    upstream = torch.randn(batch, num_classes, grid, grid, generator=gen)
    label = _blob_labels(batch, (grid, grid), num_classes, gen)
    y = (label == torch.arange(num_classes).view(1, -1, 1, 1)).float()
    ntm = NoiseTransitionMatrix(2)
    with torch.no_grad():
        ntm.weight.add_(torch.randn(2, 2, generator=gen) * 0.5)
    logits, features, upstream, y, ntm = (t.to(device) for t in (logits, features, upstream, y, ntm))
    logits.requires_grad_()
    features.requires_grad_()
    dar, bce = DAR(), AffinityBCELoss()

    def step() -> tuple[torch.Tensor, ...]:
        if impl == "factorised":
            p_dar, loss = dar(logits, features), bce(features, y, ntm())
        else:
            p_dar, loss = dense_dar_and_affinity_bce(logits, features, y, ntm())
        grads = torch.autograd.grad((p_dar * upstream).sum() + loss, (logits, features, ntm.weight))
        return (p_dar.detach(), loss.detach(), *grads)

    return step


def make_workload(spec: dict[str, Any]) -> Callable[[], Any]:
    """Build the step described by a JSON-able ``spec`` (used by the fresh-process memory probe).

    ``{"kind": "train", "setting": ..., "device": ...}`` or
    ``{"kind": "pairwise", "grid": ..., "impl": ..., "device": ..., "batch": ..., "channels": ...}``.
    """
    device = torch.device(spec["device"])
    if spec["kind"] == "train":
        return make_train_step(spec["setting"], device)
    if spec["kind"] == "pairwise":
        return make_pairwise_step(
            spec["grid"], spec["impl"], device, spec["batch"], spec["num_classes"], spec["channels"]
        )
    raise ValueError(f"unknown workload kind {spec['kind']!r}")
