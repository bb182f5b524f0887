"""Putting the bundle into a MONAI Label app.

MONAI Label (0.8.5) finds a bundle at ``<app>/model/<name>`` and drives its ``inference.json`` and
``train.json`` itself (``docs/monailabel.md``). :func:`deploy_bundle` copies the bundle there (configs,
docs, licence, one ``models/model.pt`` and the noise transition matrices learned with it, never the other
training artefacts), with ``configs/monailabel/train.json`` merged over its ``train.json``: every MONAI
Label training request is then a new run from ``models/model.pt`` instead of a resume of the last one.
Into a folder without a ``main.py`` it also writes the app's ``main.py``, which serves
:class:`~jcas_monai.monailabel_app.app.JCASApp`: inference, training, and the label-issue scoring and
review strategy. An existing app's own ``main.py`` (MONAI Label's ``monaibundle`` sample, say) is kept.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

from monai.bundle import ConfigParser

from jcas_monai.data.datalist import find_bundle_root

__all__ = ["APP_MAIN", "deploy_bundle", "serves_jcas_app"]

BUNDLE_FILES = ("configs", "docs", "LICENSE")
"""What of the bundle folder is copied: never ``models/`` (only ``model.pt`` is), ``logs/``, ``eval/``; of
``ntm/`` only the ``ntm.json`` beside the served model."""

APP_MAIN = '''"""The JCAS bundles in model/, served by MONAI Label (python -m jcas_monai.monailabel_app deploy)."""

# MONAI Label serves the MONAILabelApp subclass it finds in this module
from jcas_monai.monailabel_app.app import JCASApp  # noqa: F401
'''
"""The ``main.py`` that :func:`deploy_bundle` writes into an app folder without one."""


def serves_jcas_app(app_dir: str | os.PathLike) -> bool:
    """Whether ``<app_dir>/main.py`` is the one :func:`deploy_bundle` writes (label-issue scoring included)."""
    main = Path(app_dir) / "main.py"
    return main.is_file() and main.read_text() == APP_MAIN


def _default_overlays(bundle: Path) -> list[Path]:
    overlay = bundle.parent / "configs" / "monailabel" / "train.json"
    return [overlay] if overlay.is_file() else []


def deploy_bundle(
    app_dir: str | os.PathLike,
    name: str = "jcas",
    bundle: str | os.PathLike | None = None,
    model: str | os.PathLike | None = None,
    overlays: Sequence[str | os.PathLike] | None = None,
    overrides: Mapping[str, Mapping[str, object]] | None = None,
    overwrite: bool = False,
) -> Path:
    """Copy the bundle into ``<app_dir>/model/<name>`` for MONAI Label and return that folder; write
    ``<app_dir>/main.py`` (:data:`APP_MAIN`) when the app has none.

    Args:
        app_dir: the MONAI Label app folder (created when missing).
        name: the model name MONAI Label serves (``--conf models <name>``).
        bundle: the bundle folder (default: :func:`~jcas_monai.data.find_bundle_root`).
        model: weights to serve and to start training from (default: ``<bundle>/models/model.pt``); the
            matrices its training learned, ``ntm/ntm.json`` of its run folder (``<model>/../../ntm``), are
            copied with it when they exist (label-issue scoring reads its ``T_C``).
        overlays: config files merged over ``train.json`` in order (default: the repository's
            ``configs/monailabel/train.json`` next to the bundle).
        overrides: per config file name, ``{"train.json": {"max_epochs": 2}, ...}``, applied last.
        overwrite: replace an existing copy (its ``models/`` folder included).

    Raises:
        FileExistsError: the copy exists and ``overwrite`` is false.
        FileNotFoundError: no model file.
    """
    bundle = Path(bundle or find_bundle_root())
    model = Path(model) if model else bundle / "models" / "model.pt"
    overlays = _default_overlays(bundle) if overlays is None else [Path(o) for o in overlays]
    target = Path(app_dir) / "model" / name
    if not model.is_file():
        raise FileNotFoundError(f"{model}: no model to serve; train the bundle first or pass --model")
    if target.exists():
        if not overwrite:
            raise FileExistsError(f"{target} exists; pass --overwrite to replace it (its models/ too)")
        shutil.rmtree(target)
    target.mkdir(parents=True)
    for item in BUNDLE_FILES:
        src = bundle / item
        if src.is_dir():
            shutil.copytree(src, target / item)
        elif src.is_file():
            shutil.copy2(src, target / item)
    (target / "models").mkdir()
    shutil.copy2(model, target / "models" / "model.pt")
    matrices = model.parent.parent / "ntm" / "ntm.json"
    if matrices.is_file():
        (target / "ntm").mkdir()
        shutil.copy2(matrices, target / "ntm" / "ntm.json")
    if not (Path(app_dir) / "main.py").exists():
        (Path(app_dir) / "main.py").write_text(APP_MAIN)

    overrides = dict(overrides or {})
    for config in sorted({"train.json", *overrides}):
        path = target / "configs" / config
        parser = ConfigParser()
        parser.read_config([str(path), *(str(o) for o in (overlays if config == "train.json" else []))])
        parser.update(dict(overrides.get(config, {})))
        ConfigParser.export_config_file(parser.get(), str(path), indent=4)
    return target
