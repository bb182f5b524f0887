"""The report on hand-made results: ranking order, CSV and map formats, pairs, folds, and the evaluation."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from PIL import Image

import jcas_monai.label_issues.report as report_module
from jcas_monai.data.io import write_label
from jcas_monai.label_issues import ImageResult, LabelIssueReport, auroc, average_precision, spearman

NAMES = ["background", "tool"]


class Finder:
    """What the report reads of a :class:`~jcas_monai.label_issues.LabelIssueFinder`: results and settings."""

    def __init__(self, results: list[ImageResult], model: str) -> None:
        self.results, self.model = results, model

    def __iter__(self):
        return iter(self.results)

    def settings(self) -> dict:
        return {"model": self.model, "T_C": None}


def _result(
    folder, name: str, score: float, suspicion: np.ndarray, clean: np.ndarray | None = None
) -> ImageResult:
    """A result for a 2 x 3 label of ones (``tool``) whose pixels above 0.5 are flagged as background."""
    label = np.ones(suspicion.shape, dtype=np.uint8)
    write_label(folder / f"{name}.png", np.zeros((*suspicion.shape, 3), dtype=np.uint8))
    write_label(folder / f"{name}_label.png", label)
    flagged = suspicion > 0.5
    pairs = np.array([[0, 0], [int(flagged.sum()), 0]])
    result = ImageResult(
        image=str(folder / f"{name}.png"),
        label=str(folder / f"{name}_label.png"),
        score=score,
        flagged_fraction=float(flagged.mean()),
        likely_true_class=0 if flagged.any() else None,
        suspicion=suspicion.astype(np.float32),
        flagged=flagged,
        likely=np.zeros(suspicion.shape, dtype=np.uint8),
        prediction=np.ones(suspicion.shape, dtype=np.uint8),
        pairs=pairs,
        labelled=suspicion.size,
    )
    if clean is not None:
        result.error, result.evaluated = label != clean, np.ones(suspicion.shape, dtype=bool)
    return result


def _rows(folder) -> list[dict]:
    with open(folder / "label_issues.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_ranking_is_worst_first_ties_by_image_and_previews_show_the_head(tmp_path, monkeypatch):
    low, high = np.full((2, 3), 0.25), np.array([[0.75, 0.75, 0.0], [0.0, 0.0, 0.0]])
    results = [
        _result(tmp_path, "d", 0.2, low),
        _result(tmp_path, "c", 0.9, high),
        _result(tmp_path, "b", 0.5, low),
        _result(tmp_path, "a", 0.9, high),
    ]
    shown = []
    monkeypatch.setattr(
        report_module, "write_previews", lambda path, res, names: shown.extend(r.image for r in res)
    )
    rows = LabelIssueReport(tmp_path / "out", NAMES, previews=2).write(Finder(results, "m.pt"))

    order = [r["image"].rsplit("/", 1)[-1] for r in _rows(tmp_path / "out")]
    assert order == ["a.png", "c.png", "b.png", "d.png"] == [r["image"].rsplit("/", 1)[-1] for r in rows]
    assert [s.rsplit("/", 1)[-1] for s in shown] == ["a.png", "c.png"]
    row = _rows(tmp_path / "out")[0]
    assert row == {
        "image": str(tmp_path / "a.png"),
        "label": str(tmp_path / "a_label.png"),
        "score": "0.9",
        "flagged_fraction": str(round(2 / 6, 6)),
        "likely_true_class": "background",
    }
    assert _rows(tmp_path / "out")[-1]["likely_true_class"] == ""

    suspicion = np.asarray(Image.open(tmp_path / "out" / "a_suspicion.png"))  # round(255 * 0.75) = 191
    assert suspicion.dtype == np.uint8 and suspicion.tolist() == [[191, 191, 0], [0, 0, 0]]

    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["num_images"] == 4 and summary["evaluation"] is None
    assert summary["flagged_fraction"] == pytest.approx(4 / 24, abs=1e-6)
    assert summary["flag_pairs"] == [
        {"given": "tool", "likely_true": "background", "pixels": 4, "share": 1.0}
    ]


def test_folds_share_one_report_and_the_evaluation_follows_the_truth(tmp_path):
    tool, background = np.ones((2, 3), dtype=np.uint8), np.zeros((2, 3), dtype=np.uint8)
    cases = [  # name, suspicion, clean label
        ("a", np.array([[0.9, 0.8, 0.1], [0.1, 0.0, 0.0]]), np.array([[0, 0, 1], [1, 1, 1]])),
        ("b", np.array([[0.6, 0.2, 0.2], [0.2, 0.2, 0.2]]), tool),
        ("c", np.array([[0.7, 0.7, 0.7], [0.7, 0.4, 0.4]]), background),
    ]
    results = [_result(tmp_path, n, float(s.mean()), s, c) for n, s, c in cases]
    finders = Finder(results[:2], "fold_0.pt"), Finder(results[2:], "fold_1.pt")
    LabelIssueReport(tmp_path / "out", NAMES, previews=0).write(*finders)
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert [m["model"] for m in summary["models"]] == ["fold_0.pt", "fold_1.pt"]
    assert not (tmp_path / "out" / "previews.png").exists()

    suspicion = np.concatenate([s.ravel() for _, s, _ in cases])
    error = np.concatenate([(c != 1).ravel() for _, _, c in cases])
    wrong = [2 / 6, 0.0, 1.0]
    evaluation = summary["evaluation"]
    assert evaluation["pixel_auroc"] == pytest.approx(auroc(suspicion, error), abs=1e-6)
    assert evaluation["pixel_average_precision"] == pytest.approx(
        average_precision(suspicion, error), abs=1e-6
    )
    assert evaluation["image_spearman"] == pytest.approx(
        spearman([r.score for r in results], wrong), abs=1e-6
    )
    assert evaluation["wrong_pixel_fraction"] == pytest.approx(8 / 18, abs=1e-6)
    flagged = suspicion > 0.5
    assert evaluation["flagged_pixel_precision"] == pytest.approx(
        (flagged & error).sum() / flagged.sum(), abs=1e-6
    )
    assert evaluation["flagged_pixel_recall"] == pytest.approx(
        (flagged & error).sum() / error.sum(), abs=1e-6
    )
    assert evaluation["mislabelled_images"] == {"any_wrong_pixel": 2, "above_median": 1}
    # top 10 % of 3 images is the highest score, c (mean 0.6), truly mislabelled in both senses
    assert evaluation["precision_at_top"] == {"any_wrong_pixel": 1.0, "above_median": 1.0}
    assert [r["wrong_fraction"] for r in _rows(tmp_path / "out")] == ["1.0", str(round(2 / 6, 6)), "0.0"]


def test_nifti_input_gets_a_nifti_suspicion_map(tmp_path):
    import nibabel as nib

    suspicion = np.array([[0.0, 0.5, 1.0], [0.2, 0.4, 0.6]])
    result = _result(tmp_path, "frame", 0.45, suspicion)
    nib.save(
        nib.Nifti1Image(np.zeros((2, 3), dtype=np.float32), np.diag([0.5, 0.5, 1, 1])),
        tmp_path / "frame.nii.gz",
    )
    result.image = str(tmp_path / "frame.nii.gz")
    LabelIssueReport(tmp_path / "out", NAMES, previews=1).write(Finder([result], "m.pt"))
    saved = nib.load(tmp_path / "out" / "frame_suspicion.nii.gz")
    assert saved.get_data_dtype() == np.uint8 and np.allclose(saved.affine, np.diag([0.5, 0.5, 1, 1]))
    assert np.asarray(saved.dataobj).tolist() == [[0, 128, 255], [51, 102, 153]]
    assert (tmp_path / "out" / "previews.png").is_file()
