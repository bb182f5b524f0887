"""Reproduce the paper's ablation table: every (noise kind, variant) cell trained and evaluated by the bundle.

Usage (from the repository root; see ``docs/reproduce.md``)::

    python -m jcas_monai.reproduce --datalist D --out RESULTS \\
        [--noise ellipse,symmetric50,asymmetric50] [--variants baseline,affinity,dar,calc,jcas,upper] \\
        [--data synthetic|endovis18|OVERLAY.json] [--epochs E] [--warmup-epochs W] [--preset paper] \\
        [--seeds 0,1,2 | --seed 0] [--override KEY=VALUE ...]

Each cell ``RESULTS/<noise>/<variant>/seed<k>`` runs ``python -m monai.bundle run training`` and then
``evaluating`` in a subprocess (see :mod:`jcas_monai.reproduce.grid`); the clean-label upper bound is
one cell per seed, ``RESULTS/clean/upper/seed<k>``, shared by every table. A variant is an overlay in
``configs/ablation`` or ``configs/peers``. Every variant gets the same epoch budget; the two-stage
variants split it into warm-up and JCAS stage. Running the same command again skips finished cells and
resumes interrupted ones; adding seeds later adds cells. Reports (see :mod:`jcas_monai.reproduce.report`):
``results.csv`` and ``results.md`` (mean ± sd over seeds, paired differences against the baseline with
95 % t-intervals), ``results_seeds.csv``, ``jac_vs_epoch_<noise>.png`` and
``matrices/<noise>_<variant>_seed<k>.png``.

``--preset paper`` merges ``configs/paper.json`` (DeepLab-v2 ResNet-101, 256 x 320, 200 + 200 epochs):
it needs the ImageNet ResNet-101 weights file (``weights/resnet101_imagenet.pth``) and a GPU.
"""

from .grid import (
    CLEAN_NOISE,
    Cell,
    Study,
    StudyError,
    clean_label_variants,
    migrate_single_seed_cells,
    run_study,
    variant_overlays,
)
from .report import collect, markdown_tables, read_scalar, rows, write_reports
from .stats import Summary, summarize
