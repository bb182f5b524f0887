"""Label-noise tools: noisy copies of a dataset's labels, and reports on clean-vs-noisy label sets.

Command line (see :mod:`jcas_monai.noise.__main__`)::

    python -m jcas_monai.noise --kind KIND --datalist IN.json --out DIR --seed S  # KIND: see NOISE_KINDS
    python -m jcas_monai.noise report --datalist DIR/datalist.json

The noise itself lives in :mod:`jcas_monai.transforms.noise` (MONAI transforms, also usable on the fly).
"""

from .generate import generate_noisy_dataset
from .preview import write_preview
from .report import NoiseStats, noise_report, write_report

__all__ = ["NoiseStats", "generate_noisy_dataset", "noise_report", "write_preview", "write_report"]
