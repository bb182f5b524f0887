"""Finding the wrong labels: per-pixel and per-image label-error detection from a trained model.

Train through the noise, then ask the model which given labels it doubts, and where. The maths is in
:mod:`~jcas_monai.label_issues.suspicion` (Bayes with the learned ``T_C``, or the plain softmax), the
scoring loop in :mod:`~jcas_monai.label_issues.finder`, the outputs in :mod:`~jcas_monai.label_issues.report`
and, when clean labels are known, how well it finds them in :mod:`~jcas_monai.label_issues.metrics`.

Bundle run (``bundle/configs/label_issues.json``, merged over ``train.json``)::

    python -m monai.bundle run --config_file "['bundle/configs/train.json','bundle/configs/label_issues.json']"

Out-of-sample scores, K models each scoring the fold it did not train on (:mod:`~jcas_monai.label_issues.folds`)::

    python -m jcas_monai.label_issues --folds K --out DIR [--config_file ...] [--override KEY=VALUE ...]
"""

from .bundle import CONFIG_NAME, label_issues_parser
from .cleanlab_reference import CleanlabReference
from .finder import ImageResult, LabelIssueFinder
from .folds import HELD_OUT, fold_indices, run_folds, write_fold_datalists
from .inputs import LEARNED, load_items, model_t_c
from .metrics import PixelCurve, auroc, average_precision, image_metrics, precision_at_top, spearman
from .report import LabelIssueReport, write_previews
from .suspicion import (
    METHODS,
    SCORES,
    PixelSuspicion,
    boundary_band,
    clean_posterior,
    expected_suspicion,
    image_score,
    pixel_suspicion,
)
