"""The MONAI Label app that ``python -m jcas_monai.monailabel_app deploy`` writes (its ``main.py`` imports it)."""

from __future__ import annotations

from pathlib import Path

from monailabel.interfaces.app import MONAILabelApp
from monailabel.interfaces.tasks.infer_v2 import InferTask
from monailabel.interfaces.tasks.scoring import ScoringMethod
from monailabel.interfaces.tasks.strategy import Strategy
from monailabel.interfaces.tasks.train import TrainTask
from monailabel.tasks.activelearning.first import First
from monailabel.tasks.activelearning.random import Random
from monailabel.tasks.infer.bundle import BundleInferTask
from monailabel.tasks.train.bundle import BundleTrainTask
from monailabel.utils.others.generic import strtobool

import jcas_monai

from .label_issues import LabelIssueScoring, MostLikelyMislabelled

__all__ = ["LABEL_ISSUES", "JCASApp", "served_bundles"]

LABEL_ISSUES = "label_issues"
"""Name of the scoring method and of the strategy (``/scoring/label_issues``, ``/activelearning/label_issues``)."""


def served_bundles(app_dir: str, conf: dict) -> dict[str, str]:
    """The bundles ``<app_dir>/model/<name>`` to serve: those named by ``--conf models a,b``, else every
    folder there holding ``configs/metadata.json``, by name.

    Raises:
        ValueError: a named bundle is missing, or there is none at all.
    """
    model_dir = Path(app_dir) / "model"
    names = [n.strip() for n in conf.get("models", "").split(",") if n.strip()]
    if not names:
        names = sorted(p.parent.parent.name for p in model_dir.glob("*/configs/metadata.json"))
    for name in names:
        if not (model_dir / name / "configs" / "metadata.json").is_file():
            raise ValueError(
                f"{model_dir / name}: no bundle (configs/metadata.json) for --conf models {name}"
            )
    if not names:
        raise ValueError(
            f"{model_dir}: no bundle; run python -m jcas_monai.monailabel_app deploy --app {app_dir}"
        )
    return {name: str(model_dir / name) for name in names}


class JCASApp(MONAILabelApp):
    """Serves the JCAS bundles of ``<app_dir>/model``: per bundle, MONAI Label's ``BundleInferTask`` and
    ``BundleTrainTask``; the scoring method and the strategy ``label_issues`` (the review queue of the
    labels most likely wrong, scored by the bundle ``--conf label_issues_model NAME``, default the first
    served); and MONAI Label's ``random`` and ``first`` strategies for unlabelled images.

    Settings (``--conf``): ``models`` (see :func:`served_bundles`), ``label_issues_model``,
    ``skip_trainers`` (``true`` serves inference only).
    """

    def __init__(self, app_dir: str, studies: str, conf: dict) -> None:
        self.bundles = served_bundles(app_dir, conf)
        scorer = conf.get("label_issues_model", next(iter(self.bundles)))
        if scorer not in self.bundles:
            raise ValueError(
                f"--conf label_issues_model {scorer}: not served (served: {', '.join(self.bundles)})"
            )
        self.scorer = self.bundles[scorer]
        super().__init__(
            app_dir=app_dir,
            studies=studies,
            conf=conf,
            name="JCAS noisy-label segmentation",
            description="JCAS bundle (Guo & Yuan, MICCAI 2022): segmentation trained through label noise, "
            "and a review queue of the labels most likely wrong",
            version=jcas_monai.__version__,
        )

    def init_infers(self) -> dict[str, InferTask]:
        return {name: BundleInferTask(path, self.conf) for name, path in self.bundles.items()}

    def init_trainers(self) -> dict[str, TrainTask]:
        if strtobool(self.conf.get("skip_trainers", "false")):
            return {}
        tasks = {name: BundleTrainTask(path, self.conf) for name, path in self.bundles.items()}
        return {name: task for name, task in tasks.items() if task.is_valid()}

    def init_strategies(self) -> dict[str, Strategy]:
        return {LABEL_ISSUES: MostLikelyMislabelled(), "random": Random(), "first": First()}

    def init_scoring_methods(self) -> dict[str, ScoringMethod]:
        return {LABEL_ISSUES: LabelIssueScoring(self.scorer)}
