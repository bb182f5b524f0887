"""Scoring the given labels of a split with a trained model, one image at a time.

Each image goes through the bundle's image pipeline (``load_transforms``) and the network; the class
posterior is resized back to the label's own resolution, and the label is read as stored (the raw given
label, never ``clean_label``), so the suspicion map lines up with the label file pixel for pixel.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from monai.utils import convert_to_tensor
from tqdm import tqdm

from ..data.io import IGNORE_INDEX, read_label
from ..losses.bands import border_bands, check_radii
from .suspicion import METHODS, SCORES, expected_suspicion, image_score, pixel_suspicion

__all__ = ["ImageResult", "LabelIssueFinder"]


@dataclass
class ImageResult:
    """Scores and maps of one image, maps ``(H, W)`` at the label's resolution.

    Attributes:
        image: image path as given.
        label: label path as given.
        score: image score, higher meaning more likely mislabelled.
        flagged_fraction: fraction of the labelled pixels whose suspicion exceeds the threshold.
        likely_true_class: the most frequent likely true class over the flagged pixels (``None`` when
            nothing is flagged).
        suspicion: probability that the given label is wrong, float32, 0 on ignore pixels.
        flagged: the flagged pixels.
        likely: most likely true class of each pixel other than its given one, uint8.
        prediction: the model's most probable class, uint8.
        pairs: ``(K, K)`` flagged pixels by given class (rows) and likely true class (columns).
        labelled: number of labelled (not 255) pixels.
        error: with a clean label, the pixels whose given label differs from it (labelled in both).
        evaluated: with a clean label, the pixels labelled in both.
        probs: the class posterior ``p(c | x)`` the scores came from, ``(K, H, W)`` float32; only when the
            finder keeps it (``keep_probs``).
    """

    image: str
    label: str
    score: float
    flagged_fraction: float
    likely_true_class: int | None
    suspicion: np.ndarray
    flagged: np.ndarray
    likely: np.ndarray
    prediction: np.ndarray
    pairs: np.ndarray
    labelled: int
    error: np.ndarray | None = None
    evaluated: np.ndarray | None = None
    probs: np.ndarray | None = None

    @property
    def wrong_fraction(self) -> float | None:
        """True fraction of wrong pixels (with a clean label)."""
        if self.error is None:
            return None
        return float(self.error.sum() / max(int(self.evaluated.sum()), 1))


def _source_size(image: torch.Tensor) -> tuple[int, int]:
    """``(H, W)`` of the image before the pipeline resized it (MONAI's record of its ``Resize``), or its
    size when nothing resized it."""
    for op in getattr(image, "applied_operations", []):
        if op.get("class") == "Resize":
            return tuple(int(v) for v in op["orig_size"])
    return tuple(image.shape[-2:])


class LabelIssueFinder:
    """Iterates :class:`ImageResult` over labelled items, scoring each given label with a trained model.

    Args:
        network: the bundle's network (``network``); its weights are loaded from ``model_file``. In eval
            mode it returns class logits or log-probabilities ``(1, K, h, w)``.
        data: items ``{"image", "label"[, clean_key]}`` (:func:`~jcas_monai.label_issues.load_items`).
        preprocessing: the image pipeline (``load_transforms``), called on ``{"image": path}``.
        model_file: trained weights, a plain state dict (``models/model.pt``).
        num_classes: ``K``.
        t_c: ``(K, K)`` class-level noise transition matrix, rows clean (``None``: the model has none).
        method: ``"bayes"`` (needs ``t_c``) or ``"softmax"`` (config key ``label_issues_method``).
        score: ``"mean"``, ``"interior"``, ``"excess"`` or ``"softmin"`` (config key ``label_issues_score``; see
            :func:`~jcas_monai.label_issues.image_score`).
        temperature: of the ``"softmin"`` score.
        band: width in pixels of the predicted boundary band the ``"interior"`` score leaves out (config
            key ``label_issues_band``).
        threshold: suspicion above which a pixel is flagged (config key ``label_issues_threshold``).
        clean_key: item key of a clean reference label; items with it are also evaluated.
        device: where the network runs.
        progress: show a progress bar on stderr.
        keep_probs: attach the class posterior to every result (``ImageResult.probs``), as the cleanlab
            reference needs (config key ``label_issues_cleanlab``).
        border_radii: the border bands of a banded ``t_c`` ``(M, K, K)`` (config key ``ntm_bands``): each
            pixel's band is taken from the given label at the network's input size, as in training.

    Raises:
        ValueError: an unknown method or score, ``"bayes"`` without ``t_c``, or weights that do not fit
            the network (naming the file).
        FileNotFoundError: no ``model_file``.
    """

    def __init__(
        self,
        network: torch.nn.Module,
        data: Sequence[Mapping[str, str]],
        preprocessing: Callable[[dict], dict],
        model_file: str | os.PathLike,
        num_classes: int,
        t_c: torch.Tensor | None = None,
        method: str = "bayes",
        score: str = "mean",
        temperature: float = 0.1,
        band: int = 2,
        threshold: float = 0.5,
        clean_key: str | None = None,
        device: str | torch.device = "cpu",
        progress: bool = True,
        keep_probs: bool = False,
        border_radii: Sequence[int] = (),
    ) -> None:
        if method not in METHODS:
            raise ValueError(f"label_issues_method must be one of {', '.join(METHODS)}; got {method!r}")
        if score not in SCORES:
            raise ValueError(f"label_issues_score must be one of {', '.join(SCORES)}; got {score!r}")
        if band < 0:
            raise ValueError(f"label_issues_band must be >= 0 (pixels), got {band}")
        if method == "bayes" and t_c is None:
            raise ValueError(
                "label_issues_method 'bayes' needs the model's T_C (config key label_issues_t_c), and this model "
                "has none (trained without class correction); use label_issues_method 'softmax'"
            )
        self.model_file, self.device = Path(model_file), torch.device(device)
        if not self.model_file.is_file():
            raise FileNotFoundError(
                f"{self.model_file}: no trained model (config key 'ckpt_dir'); train the bundle first"
            )
        state = torch.load(self.model_file, map_location=self.device, weights_only=True)
        try:
            network.load_state_dict(state)
        except RuntimeError as err:
            raise ValueError(
                f"{self.model_file}: the weights do not fit the configured network ({err})"
            ) from err
        self.network = network.to(self.device).eval()
        self.data, self.preprocessing, self.num_classes = list(data), preprocessing, num_classes
        self.t_c = None if t_c is None else torch.as_tensor(t_c, dtype=torch.float32, device=self.device)
        self.method, self.score, self.temperature, self.threshold = method, score, temperature, threshold
        self.band = band
        self.clean_key, self.progress, self.keep_probs = clean_key, progress, keep_probs
        self.border_radii = check_radii(border_radii)
        if self.t_c is not None and self.t_c.ndim == 3 and self.t_c.shape[0] != len(self.border_radii) + 1:
            raise ValueError(
                f"label_issues_t_c holds {self.t_c.shape[0]} banded matrices, but ntm_bands "
                f"{list(self.border_radii)} gives {len(self.border_radii) + 1} bands"
            )

    def settings(self) -> dict:
        """How the labels were scored, for the report."""
        return {
            "model": str(self.model_file),
            "method": self.method,
            "score": self.score,
            "temperature": self.temperature,
            "band": self.band,
            "threshold": self.threshold,
            "T_C": None if self.t_c is None else self.t_c.double().cpu().tolist(),
        }

    def __len__(self) -> int:
        return len(self.data)

    def __iter__(self) -> Iterator[ImageResult]:
        for item in tqdm(
            self.data, desc="scoring labels", unit="image", file=sys.stderr, disable=not self.progress
        ):
            yield self.score_item(item)

    def _read_label(self, path: str, size: tuple[int, int], image: str) -> torch.Tensor:
        label = read_label(path)
        if label.shape != size:
            raise ValueError(
                f"{path}: size {label.shape[0]}x{label.shape[1]} does not match its image {image} "
                f"({size[0]}x{size[1]})"
            )
        bad = np.setdiff1d(np.unique(label), [*range(self.num_classes), IGNORE_INDEX])
        if bad.size:
            raise ValueError(
                f"{path}: label value {int(bad[0])} is outside 0..{self.num_classes - 1} and is not "
                f"{IGNORE_INDEX} (config key 'num_classes')"
            )
        return torch.from_numpy(label).to(self.device).long()

    def _bands(self, label: torch.Tensor, input_size: tuple[int, int]) -> torch.Tensor | None:
        """Border band of every pixel of ``label`` for a banded ``T_C`` (``None`` otherwise), taken at the
        network's ``input_size`` as in training and brought back to the label's size."""
        if self.t_c is None or self.t_c.ndim != 3:
            return None
        small = F.interpolate(label[None, None].float(), size=input_size, mode="nearest")[:, 0].long()
        bands = border_bands(small, self.border_radii)[:, None].float()
        return F.interpolate(bands, size=label.shape, mode="nearest")[0, 0].long()

    @torch.no_grad()
    def score_item(self, item: Mapping[str, str]) -> ImageResult:
        """Score one item (see :class:`ImageResult`)."""
        image = self.preprocessing({"image": item["image"]})["image"]
        size = _source_size(image)
        label = self._read_label(item["label"], size, item["image"])
        x = convert_to_tensor(image, dtype=torch.float32, device=self.device, track_meta=False)
        logits = self.network(x.unsqueeze(0))
        probs = F.interpolate(
            torch.softmax(logits.float(), dim=1), size=size, mode="bilinear", align_corners=False
        )[0]
        bands = self._bands(label, tuple(x.shape[-2:]))
        pixels = pixel_suspicion(probs, label, self.method, self.t_c, bands=bands)
        prediction = probs.argmax(0)
        flagged = (pixels.suspicion > self.threshold) & pixels.valid
        k = self.num_classes
        pairs = torch.bincount(label[flagged] * k + pixels.likely[flagged], minlength=k * k).view(k, k)
        result = ImageResult(
            image=item["image"],
            label=item["label"],
            score=image_score(
                pixels.suspicion,
                pixels.valid,
                self.score,
                self.temperature,
                prediction,
                self.band,
                expected_suspicion(probs, self.t_c if self.method == "bayes" else None, bands)
                if self.score == "excess"
                else None,
            ),
            flagged_fraction=float(flagged.sum() / pixels.valid.sum().clamp_min(1)),
            likely_true_class=int(pairs.sum(0).argmax()) if flagged.any() else None,
            suspicion=pixels.suspicion.float().cpu().numpy(),
            flagged=flagged.cpu().numpy(),
            likely=pixels.likely.to(torch.uint8).cpu().numpy(),
            prediction=prediction.to(torch.uint8).cpu().numpy(),
            pairs=pairs.cpu().numpy(),
            labelled=int(pixels.valid.sum()),
            probs=probs.cpu().numpy() if self.keep_probs else None,
        )
        if self.clean_key is not None and self.clean_key in item:
            clean = self._read_label(item[self.clean_key], size, item["image"])
            evaluated = pixels.valid & (clean != IGNORE_INDEX)
            result.error = ((label != clean) & evaluated).cpu().numpy()
            result.evaluated = evaluated.cpu().numpy()
        return result
