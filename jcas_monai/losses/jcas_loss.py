"""The combined JCAS training loss, with every term switchable from the config.

JCAS (Guo & Yuan, MICCAI 2022, arXiv 2206.07994): class-level and affinity-level supervision of a
two-branch network, DAR-refined class predictions, forward correction by learnable noise transition
matrices ``T_C`` and ``T_A``, their log-det (volume) regulariser, and CALC tying ``T_A`` to ``T_C``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch.nn.modules.loss import _Loss

from .affinity_loss import AffinityBCELoss
from .bands import band_fractions, border_bands, check_radii
from .branch_loss import BRANCHES, branch_output
from .calc import CALCLoss
from .class_loss import ForwardCorrectedCELoss
from .ntm import NoiseTransitionMatrix

__all__ = ["JCASLoss"]


class JCASLoss(_Loss):
    """JCAS loss over the outputs of a two-branch network; ablation variants are constructor settings.

    ``L = sum_b seg_w[b] (CE(Q_b) + [use_dar] CE(P_dar_b)) + sum_b aff_w[b] BCE(features_b)
    + logdet_weight (logdet T_C + logdet T_A) + calc_weight CALC(T_C, class_freq, T_A)``
    (the log-det of a fixed matrix, a constant, is left out),
    where ``b`` runs over the branches ``main`` (layer4) and ``aux`` (layer3), the class losses are
    forward-corrected by ``T_C`` when ``class_correction`` is on
    (:class:`~jcas_monai.losses.ForwardCorrectedCELoss`), the affinity losses by ``T_A`` when
    ``affinity_correction`` is on (:class:`~jcas_monai.losses.AffinityBCELoss`), and CALC is
    :class:`~jcas_monai.losses.CALCLoss`. A term with weight 0 is not computed.

    ``T_C`` (``K x K``) and ``T_A`` (``2 x 2``) are the submodules ``t_c`` and ``t_a``
    (:class:`~jcas_monai.losses.NoiseTransitionMatrix`), so ``loss.parameters()`` are the matrices'
    parameters, to be given to an optimiser.

    Settings of the authors' recipe (method notes, section 7):

    - stage 1 (warm-up): ``seg_weights=(1, 0.1)``, ``aff_weights=(0.1, 1)``, ``use_dar=True``,
      no correction, ``logdet_weight=0.1``, ``calc_weight=0``;
    - stage 2 (JCAS): the same with ``class_correction=True``, ``affinity_correction=True``,
      ``logdet_weight=0.5``, ``calc_weight=0.01`` (``calc_distance="mse"`` in the authors' code,
      ``"l2"`` in the paper), with fresh matrices.

    With every JCAS term off (``aff_weights=(0, 0)``, ``use_dar=False``, no correction, log-det and CALC
    weights 0, ``seg_weights=(1, 0)``) the loss is the cross-entropy of ``main_logits`` upsampled to the
    label. CALC uses ``class_freq`` as the clean class frequencies ``N_m``; as in the authors' code, pass
    the class fractions of the noisy training labels (or any better estimate of the clean ones).

    After each call, :attr:`last_terms` holds the unweighted value of every computed term (keys
    ``seg_main``, ``dar_main``, ``aff_main``, likewise ``_aux``, ``logdet``, ``calc``) and ``total``.

    The loss is a sum of scalar terms, so the ``_Loss`` reduction does not apply.

    Args:
        num_classes: number of classes ``K``.
        class_freq: class fractions ``(K,)`` of the training labels; required when ``calc_weight > 0``.
        seg_weights: weights of the class losses of the (main, aux) branches.
        aff_weights: weights of the affinity losses of the (main, aux) branches; 0 disables.
        use_dar: add the class loss on ``P_dar`` of each branch with a class loss.
        class_correction: forward-correct the class losses with ``T_C``.
        affinity_correction: forward-correct the affinity losses with ``T_A``.
        logdet_weight: weight of ``logdet(T_C) + logdet(T_A)``.
        calc_weight: weight of CALC.
        calc_distance: ``"l2"`` or ``"mse"``, see :class:`~jcas_monai.losses.CALCLoss`.
        ntm_init: initial value of the free parameters of both matrices.
        fixed_t_c: a ``(K, K)`` matrix used as ``T_C`` instead of a learned one (an oracle, for diagnosis;
            see :func:`~jcas_monai.losses.load_matrix`).
        fixed_t_a: likewise a ``(2, 2)`` matrix for ``T_A``.
        ntm_form: parameterisation of both matrices, ``"softmax"`` or the authors' ``"authors"``
            (see :class:`~jcas_monai.losses.NoiseTransitionMatrix`).
        ignore_index: label value of pixels without supervision.
        chunk_size: rows per chunk of the affinity loss (None: automatic).
        border_radii: radii in pixels of the border bands of a banded ``T_C`` (config key ``ntm_bands``;
            :mod:`~jcas_monai.losses.bands`): ``T_C`` then holds one matrix per band of distance from the
            noisy label's borders, ``(len(border_radii) + 1, K, K)``, and each pixel is corrected by its
            band's matrix. The log-det term sums over the bands; CALC compares ``T_A`` with the closed
            form of the bands' mixture, each band weighted by its share of the batch's labelled pixels.
            Empty (default): one ``T_C``, as in the paper.

    Raises:
        ValueError: ``calc_weight > 0`` without ``class_freq``, or ``class_freq`` not of length ``K``.
    """

    def __init__(
        self,
        num_classes: int,
        class_freq: Sequence[float] | torch.Tensor | None = None,
        seg_weights: Sequence[float] = (1.0, 0.1),
        aff_weights: Sequence[float] = (0.1, 1.0),
        use_dar: bool = True,
        class_correction: bool = False,
        affinity_correction: bool = False,
        logdet_weight: float = 0.0,
        calc_weight: float = 0.0,
        calc_distance: str = "l2",
        ntm_init: float = -2.0,
        fixed_t_c: torch.Tensor | None = None,
        fixed_t_a: torch.Tensor | None = None,
        ntm_form: str = "softmax",
        ignore_index: int = 255,
        chunk_size: int | None = None,
        border_radii: Sequence[int] = (),
    ) -> None:
        super().__init__()
        self.border_radii = check_radii(border_radii)
        if calc_weight > 0 and class_freq is None:
            raise ValueError(
                "JCASLoss: calc_weight > 0 needs class_freq (class fractions of the training labels)"
            )
        if class_freq is not None:
            class_freq = torch.as_tensor(class_freq, dtype=torch.float32)
            if class_freq.shape != (num_classes,):
                raise ValueError(
                    f"JCASLoss: class_freq must have {num_classes} entries, got shape {tuple(class_freq.shape)}"
                )
        self.register_buffer("class_freq", class_freq)
        self.seg_weights = dict(zip(BRANCHES, map(float, seg_weights), strict=True))
        self.aff_weights = dict(zip(BRANCHES, map(float, aff_weights), strict=True))
        self.use_dar = use_dar
        self.class_correction = class_correction
        self.affinity_correction = affinity_correction
        self.logdet_weight = logdet_weight
        self.calc_weight = calc_weight
        self.t_c = NoiseTransitionMatrix(
            num_classes, ntm_init, fixed_t_c, ntm_form, len(self.border_radii) + 1
        )
        self.t_a = NoiseTransitionMatrix(2, ntm_init, fixed_t_a, ntm_form)
        self.class_loss = ForwardCorrectedCELoss(ignore_index=ignore_index)
        self.affinity_loss = AffinityBCELoss(chunk_size=chunk_size)
        self.calc_loss = CALCLoss(calc_distance)
        self._last_terms: dict[str, torch.Tensor] = {}

    @property
    def last_terms(self) -> dict[str, float]:
        """Unweighted value of each term computed by the last call, and ``total``."""
        return {name: float(value) for name, value in self._last_terms.items()}

    def forward(
        self,
        pred: Mapping[str, torch.Tensor | None] | torch.Tensor,
        target: Mapping[str, torch.Tensor] | torch.Tensor,
    ) -> torch.Tensor:
        """
        Args:
            pred: class logits ``(B, K, H', W')`` (plain cross-entropy, for networks without branches),
                or the training-mode output of :class:`~jcas_monai.networks.JCASNet`: ``main_logits``,
                ``aux_logits`` ``(B, K, H/8, W/8)``; ``main_dar``, ``aux_dar`` ``(B, K, gh, gw)`` (needed
                with ``use_dar``); ``main_features``, ``aux_features`` ``(B, C, gh, gw)`` (needed for a
                branch with an affinity weight).
            target: the label ``(B, 1, H, W)``, or a mapping with ``label`` and ``affinity``, the
                factorised affinity label ``(B, K, gh, gw)`` of :class:`~jcas_monai.transforms.AffinityLabel`
                (needed when an affinity weight is positive).

        Returns:
            the scalar loss.

        Raises:
            ValueError: an output or target needed by an enabled term is missing (the message names it).
        """
        label = target["label"] if isinstance(target, Mapping) else target
        terms: dict[str, torch.Tensor] = {}
        if isinstance(pred, torch.Tensor):
            terms["seg_main"] = self.class_loss(pred, label)
            total = terms["seg_main"]
        else:
            total = self._branch_losses(pred, target, label, terms)
        self._last_terms = {name: value.detach() for name, value in terms.items()}
        self._last_terms["total"] = total.detach()
        return total

    def _branch_losses(
        self,
        pred: Mapping[str, torch.Tensor | None],
        target: Mapping[str, torch.Tensor] | torch.Tensor,
        label: torch.Tensor,
        terms: dict[str, torch.Tensor],
    ) -> torch.Tensor:
        """Fill ``terms`` with the unweighted terms of a two-branch output and return the weighted sum."""
        need_t_c = self.class_correction or self.logdet_weight > 0 or self.calc_weight > 0
        need_t_a = self.affinity_correction or self.logdet_weight > 0 or self.calc_weight > 0
        t_c = self.t_c() if need_t_c else None
        t_a = self.t_a() if need_t_a else None
        class_t = t_c if self.class_correction else None
        affinity_t = t_a if self.affinity_correction else None
        bands = None
        if self.border_radii and need_t_c:
            bands = border_bands(label, self.border_radii)
        total = torch.zeros((), device=label.device)
        for branch in BRANCHES:
            seg_w, aff_w = self.seg_weights[branch], self.aff_weights[branch]
            if seg_w > 0:
                logits = branch_output(pred, f"{branch}_logits", "JCASLoss")
                terms[f"seg_{branch}"] = self.class_loss(logits, label, class_t, bands)
                total = total + seg_w * terms[f"seg_{branch}"]
                if self.use_dar:
                    p_dar = branch_output(pred, f"{branch}_dar", "JCASLoss")
                    terms[f"dar_{branch}"] = self.class_loss(p_dar, label, class_t, bands)
                    total = total + seg_w * terms[f"dar_{branch}"]
            if aff_w > 0:
                if not isinstance(target, Mapping) or target.get("affinity") is None:
                    raise ValueError(
                        "JCASLoss: affinity weights > 0 need target['affinity'] (see AffinityLabeld)"
                    )
                features = branch_output(pred, f"{branch}_features", "JCASLoss")
                terms[f"aff_{branch}"] = self.affinity_loss(features, target["affinity"], affinity_t)
                total = total + aff_w * terms[f"aff_{branch}"]
        if self.logdet_weight > 0:
            # a fixed matrix's log-det is a constant, and infinite for a singular one (a true banded matrix
            # of few pixels can be): only learned matrices count
            terms["logdet"] = sum(
                (
                    torch.linalg.slogdet(t).logabsdet.sum()
                    for t, ntm in ((t_c, self.t_c), (t_a, self.t_a))
                    if ntm.fixed is None
                ),
                torch.zeros((), device=label.device),
            )
            total = total + self.logdet_weight * terms["logdet"]
        if self.calc_weight > 0:
            if self.class_freq is None:
                raise ValueError("JCASLoss: calc_weight > 0 needs class_freq, which was not given")
            if bands is not None:
                labelled = (label[:, 0] if label.ndim == 4 else label) != self.class_loss.ignore_index
                weights = band_fractions(bands, labelled, t_c.shape[0]).to(t_c)
                t_c = (weights[:, None, None] * t_c).sum(dim=0)
            terms["calc"] = self.calc_loss(t_c, self.class_freq, t_a)
            total = total + self.calc_weight * terms["calc"]
        return total
