"""A review queue of the labels most likely wrong, as a MONAI Label scoring method and strategy.

MONAI Label's own scoring methods rank unlabelled images (epistemic uncertainty) or compare a final label
with the original one; here the already labelled images are ranked by how likely their labels are wrong:

- :class:`LabelIssueScoring` runs the bundle's label-issue config (``configs/label_issues.json`` merged over
  ``train.json``, :mod:`jcas_monai.label_issues`) on every image with a ``final`` label, and writes its
  score, flagged fraction and most likely true class into the image's info in the datastore (keys
  :data:`SCORE_KEY`, :data:`FLAGGED_KEY`, :data:`LIKELY_KEY`), with a checksum of the label it scored
  (:data:`CHECKSUM_KEY`). The bundle's report (CSV, suspicion maps, previews) goes to the bundle copy's
  ``label_issues`` folder.
- :class:`MostLikelyMislabelled` returns the labelled image with the highest score whose label is still
  the one scored: once a reviewer saves a corrected label, the image leaves the queue until it is scored
  again.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from monailabel.interfaces.datastore import Datastore, DefaultLabelTag
from monailabel.interfaces.tasks.scoring import ScoringMethod
from monailabel.interfaces.tasks.strategy import Strategy
from monailabel.utils.others.generic import name_to_device

from jcas_monai.label_issues import label_issues_parser

__all__ = [
    "CHECKSUM_KEY",
    "FLAGGED_KEY",
    "LIKELY_KEY",
    "SCORE_KEY",
    "LabelIssueScoring",
    "MostLikelyMislabelled",
    "label_checksum",
]

SCORE_KEY = "label_issue_score"
"""Image info key of the score: higher means the label is more likely wrong."""
FLAGGED_KEY = "label_issue_flagged_fraction"
"""Image info key of the fraction of labelled pixels flagged as probably wrong."""
LIKELY_KEY = "label_issue_likely_true_class"
"""Image info key of the most likely true class of the flagged pixels (empty when none is flagged)."""
CHECKSUM_KEY = "label_issue_label_checksum"
"""Image info key of the SHA-256 of the label file that was scored."""


def label_checksum(path: str | os.PathLike) -> str:
    """SHA-256 of a label file's bytes."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


class LabelIssueScoring(ScoringMethod):
    """Score every labelled image of the datastore with the bundle at ``bundle_path`` (see the module docstring).

    Request keys: ``device`` (default: CUDA when available), ``label_tag`` (default: ``final``).

    Args:
        bundle_path: the deployed bundle, ``<app>/model/<name>``.
        label_tag: the label tag scored.
    """

    def __init__(self, bundle_path: str | os.PathLike, label_tag: str = DefaultLabelTag.FINAL) -> None:
        super().__init__("How likely each labelled image's label is wrong (JCAS label-issue score)")
        self.bundle_path, self.label_tag = Path(bundle_path), label_tag

    def __call__(self, request: dict, datastore: Datastore) -> dict:
        tag = request.get("label_tag", self.label_tag)
        ids = sorted(i for i in datastore.list_images() if datastore.get_label_by_image_id(i, tag))
        if not ids:
            return {"executed": 0, "scores": {}}
        items = [{"image": datastore.get_image_uri(i), "label": datastore.get_label_uri(i, tag)} for i in ids]
        checksums = {item["image"]: label_checksum(item["label"]) for item in items}
        overrides = {
            "label_issues#data": items,
            "label_issues_split": f"datastore '{tag}' labels",
            "device": name_to_device(request.get("device")),
        }
        parser = label_issues_parser(
            self.bundle_path, [self.bundle_path / "configs" / "train.json"], overrides
        )
        report = parser.get_parsed_content("label_issues#report")
        rows = report.write(parser.get_parsed_content("label_issues#finder"))
        image_ids = {item["image"]: i for item, i in zip(items, ids, strict=True)}
        scores = {}
        for row in rows:
            image_id = image_ids[row["image"]]
            datastore.update_image_info(
                image_id,
                {
                    SCORE_KEY: row["score"],
                    FLAGGED_KEY: row["flagged_fraction"],
                    LIKELY_KEY: row["likely_true_class"],
                    CHECKSUM_KEY: checksums[row["image"]],
                },
            )
            scores[image_id] = row["score"]
        return {"executed": len(rows), "scores": scores, "report": str(report.out)}


class MostLikelyMislabelled(Strategy):
    """The labelled image with the highest :data:`SCORE_KEY` whose label has not changed since it was scored.

    Request keys: ``label_tag`` (default: ``final``).

    Args:
        label_tag: the label tag reviewed.
    """

    def __init__(self, label_tag: str = DefaultLabelTag.FINAL) -> None:
        super().__init__("The labelled image whose label is most likely wrong, for review")
        self.label_tag = label_tag

    def __call__(self, request: dict, datastore: Datastore) -> dict | None:
        tag = request.get("label_tag", self.label_tag)
        queue = []
        for image_id in datastore.list_images():
            label_id = datastore.get_label_by_image_id(image_id, tag)
            info = datastore.get_image_info(image_id)
            if not label_id or SCORE_KEY not in info:
                continue
            if info.get(CHECKSUM_KEY) == label_checksum(datastore.get_label_uri(label_id, tag)):
                queue.append((-float(info[SCORE_KEY]), image_id))
        if not queue:
            return None
        score, image_id = min(queue)
        return {"id": image_id, SCORE_KEY: -score}
