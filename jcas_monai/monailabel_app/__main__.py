"""``python -m jcas_monai.monailabel_app``: see :mod:`jcas_monai.monailabel_app.cli`."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
