"""The two-branch JCAS network (Guo & Yuan, MICCAI 2022, section 2 and Fig. 2).

An encoder that exposes multi-scale features feeds two branches: the auxiliary branch on an
intermediate stage (DeepLab-v2 layer3) and the main branch on the last stage (layer4). Each branch has
a class head giving logits ``Q`` and an affinity-feature head whose features define the predicted
pair-wise affinity ``P'``; the :class:`~jcas_monai.networks.DAR` block refines ``Q`` with ``P'`` on a
fixed grid.
"""

from collections.abc import Sequence
from numbers import Integral

import torch
import torch.nn.functional as F
from torch import nn

from .dar import DAR

__all__ = ["AffinityHead", "ClassHead", "JCASNet"]


class ClassHead(nn.Module):
    """DeepLab-v2 classifier: the sum of parallel dilated 3x3 convolutions (ASPP by summation).

    Args:
        in_channels: channels of the encoder feature.
        num_classes: number of classes ``K``.
        dilations: dilation (and padding) of each parallel convolution.
        authors_head: reproduce the authors' code, whose classifier returns after summing only the first
            two convolutions (dilations 6 and 12); the remaining ones never contribute and are not built.
    """

    def __init__(
        self, in_channels: int, num_classes: int, dilations: Sequence[int] = (6, 12, 18, 24), authors_head: bool = False
    ) -> None:
        super().__init__()
        dilations = tuple(dilations)[:2] if authors_head else tuple(dilations)
        self.convs = nn.ModuleList(nn.Conv2d(in_channels, num_classes, 3, padding=d, dilation=d) for d in dilations)
        for conv in self.convs:
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.zeros_(conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, h, w)`` -> logits ``(B, K, h, w)``."""
        out = self.convs[0](x)
        for i, conv in enumerate(self.convs):
            if i > 0:
                out = out + conv(x)
        return out


class AffinityHead(nn.Sequential):
    """Affinity-feature head: 3x3 conv, BatchNorm, ReLU, 1x1 conv to ``out_channels`` features.

    ``(B, in_channels, h, w)`` -> ``(B, out_channels, h, w)``; the affinity between two positions is the
    cosine similarity of their rectified features (see :class:`~jcas_monai.networks.DAR`).
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 1),
        )


def _resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if x.shape[-2] == size[0] and x.shape[-1] == size[1]:
        return x
    return F.interpolate(x, size=[size[0], size[1]], mode="bilinear", align_corners=False)


def _grid(size: Sequence[int], key: str) -> tuple[int, int]:
    """``size`` as ``(gh, gw)``, raising ValueError naming the config ``key`` unless it is two positive ints."""
    grid = tuple(size) if isinstance(size, Sequence) else (size,)
    if len(grid) != 2 or not all(isinstance(n, Integral) and not isinstance(n, bool) and n > 0 for n in grid):
        raise ValueError(f"JCASNet: config key '{key}' must be two positive integers (gh, gw), got {size!r}")
    return int(grid[0]), int(grid[1])


class JCASNet(nn.Module):
    """Two-branch segmentation network with class heads, affinity heads and DAR.

    Args:
        backbone: encoder whose forward returns a sequence of feature maps (for example
            :class:`~jcas_monai.networks.DeepLabV2`, or any MONAI encoder returning multi-scale features).
        num_classes: number of classes ``K`` (background included).
        feature_channels: channels of each backbone output; read from ``backbone.feature_channels`` when
            omitted.
        aux_index: index of the backbone output feeding the auxiliary branch (layer3 in DeepLab-v2).
        main_index: index of the backbone output feeding the main branch (layer4).
        affinity_channels: affinity-feature channels of the (aux, main) branch; 128 and 256 in the paper.
        use_affinity: build the affinity heads (needed by the affinity loss and by DAR).
        use_dar: apply DAR (requires ``use_affinity``).
        grid_size: ``(h, w)`` of the DAR / affinity grid in training (64 x 64 in the paper).
        eval_grid_size: DAR grid at inference (32 x 32 in the authors' test code).
        head_dilations: dilations of the class heads.
        authors_head: the authors' class-head quirk (see :class:`ClassHead`).
        dropout: probability of dropping a feature entry at the input of the class and affinity heads while
            training (0 by default: no dropout layer). MONAI Label's epistemic scoring sets it and samples
            predictions in training mode without gradients.

    Forward:
        ``x`` of shape ``(B, C_in, H, W)``.

        - training mode: a dict with ``main_logits`` and ``aux_logits`` (class logits ``Q`` at the
          encoder resolution), and when enabled ``main_features`` / ``aux_features`` (affinity features
          on ``grid_size``) and ``main_dar`` / ``aux_dar`` (``P_dar`` on ``grid_size``).
        - eval mode, or training mode without gradients (Monte-Carlo dropout): ``(B, K, H, W)``
          log-probabilities of the test-time combination of the main branch,
          ``log((softmax(P_dar) + softmax(Q)) / 2)`` with DAR on ``eval_grid_size`` (or the upsampled
          ``Q`` logits without DAR); its argmax is the authors' prediction.

        In eval mode the network compiles with ``torch.jit.script`` (any input size); the training-mode
        output is not part of the scripted module.
    """

    def __init__(
        self,
        backbone: nn.Module,
        num_classes: int,
        feature_channels: Sequence[int] | None = None,
        aux_index: int = 2,
        main_index: int = 3,
        affinity_channels: Sequence[int] = (128, 256),
        use_affinity: bool = True,
        use_dar: bool = True,
        grid_size: Sequence[int] = (64, 64),
        eval_grid_size: Sequence[int] = (32, 32),
        head_dilations: Sequence[int] = (6, 12, 18, 24),
        authors_head: bool = False,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"JCASNet: config key 'dropout' must be in [0, 1), got {dropout!r}")
        if use_dar and not use_affinity:
            raise ValueError("JCASNet: use_dar=True needs use_affinity=True (DAR reasons with the affinity features)")
        channels = tuple(feature_channels or getattr(backbone, "feature_channels", ()))
        if not channels:
            raise ValueError("JCASNet: pass feature_channels, the backbone has no 'feature_channels' attribute")
        self.backbone = backbone
        self.num_classes = num_classes
        self.branch_index = {"aux": aux_index, "main": main_index}
        self.main_index = main_index
        self.grid_size = _grid(grid_size, "grid_size")
        self.eval_grid_size = _grid(eval_grid_size, "eval_grid_size")
        self.use_affinity = use_affinity
        self.class_heads = nn.ModuleDict(
            {b: ClassHead(channels[i], num_classes, head_dilations, authors_head) for b, i in self.branch_index.items()}
        )
        self.affinity_heads = nn.ModuleDict(
            {b: AffinityHead(channels[i], c) for (b, i), c in zip(self.branch_index.items(), affinity_channels)}
            if use_affinity
            else {}
        )
        self.dar = DAR() if use_dar else None
        self.head_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def head_parameters(self) -> list[nn.Parameter]:
        """Parameters of the class and affinity heads (trained at the higher learning rate in the paper)."""
        return [*self.class_heads.parameters(), *self.affinity_heads.parameters()]

    def backbone_parameters(self) -> list[nn.Parameter]:
        """Trainable encoder parameters."""
        return [p for p in self.backbone.parameters() if p.requires_grad]

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor] | torch.Tensor:
        feats = self.backbone(x)
        if self.training and torch.is_grad_enabled():
            return self._train_outputs(feats)
        return self._predict(self.head_dropout(feats[self.main_index]), (x.shape[-2], x.shape[-1]))

    @torch.jit.unused
    def _train_outputs(self, feats: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        for branch, index in self.branch_index.items():
            feat = self.head_dropout(feats[index])
            logits = self.class_heads[branch](feat)
            out[f"{branch}_logits"] = logits
            if self.use_affinity:
                aff = _resize(self.affinity_heads[branch](feat), self.grid_size)
                out[f"{branch}_features"] = aff
                if self.dar is not None:
                    out[f"{branch}_dar"] = self.dar(_resize(logits, self.grid_size), aff)
        return out

    def _predict(self, feat: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        logits = self.class_heads["main"](feat)
        if self.dar is None:
            return _resize(logits, size)
        aff = _resize(self.affinity_heads["main"](feat), self.eval_grid_size)
        p_dar = self.dar(_resize(logits, self.eval_grid_size), aff)
        prob = (_resize(p_dar, size).softmax(1) + _resize(logits, size).softmax(1)) / 2
        # classes innermost in memory: an argmax over them (``AsDiscrete(argmax=True)`` on every decollated
        # item) then reads contiguous memory, ten times faster on CPU than across the class planes
        return prob.clamp_min(1e-12).log().contiguous(memory_format=torch.channels_last)
