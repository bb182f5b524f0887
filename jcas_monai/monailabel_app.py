"""Serving the bundle with MONAI Label, and bringing the annotators' labels back to JCAS training.

MONAI Label (0.8.5) finds a bundle at ``<app>/model/<name>`` and drives its ``inference.json`` and
``train.json`` itself (``docs/monailabel.md``). Two helpers close the loop:

``deploy_bundle`` copies the bundle there (configs, docs, licence and one ``models/model.pt``, never the
training artefacts), with ``configs/monailabel/train.json`` merged over its ``train.json``: every MONAI
Label training request is then a new run from ``models/model.pt`` instead of a resume of the last one.

``export_datalist`` turns a MONAI Label datastore (a folder of images with the annotators' labels in
``labels/final``) into a datalist JSON for the bundle, the dataset check and the noise report: the
annotators' labels are the noisy ``label`` JCAS trains on; a second label tag (e.g. an expert's) can be
exported as ``clean_label``.

Usage::

    python -m jcas_monai.monailabel_app deploy --app apps/monaibundle [--name jcas] [--model PATH]
    python -m jcas_monai.monailabel_app datalist --studies DIR --out DIR/datalist.json [--clean-tag TAG]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from monai.bundle import ConfigParser

from jcas_monai.data.datalist import find_bundle_root

__all__ = ["deploy_bundle", "export_datalist", "main"]

BUNDLE_FILES = ("configs", "docs", "LICENSE")
"""What of the bundle folder is copied: never ``models/`` (only ``model.pt`` is), ``logs/``, ``eval/``, ``ntm/``."""

IMAGE_PATTERNS = ("*.png", "*.jpg", "*.jpeg")
"""Image files the datastore lists (MONAI Label's server uses these among its defaults)."""


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
    """Copy the bundle into ``<app_dir>/model/<name>`` for MONAI Label and return that folder.

    Args:
        app_dir: the MONAI Label app (e.g. its ``monaibundle`` sample app).
        name: the model name MONAI Label serves (``--conf models <name>``).
        bundle: the bundle folder (default: :func:`~jcas_monai.data.find_bundle_root`).
        model: weights to serve and to start training from (default: ``<bundle>/models/model.pt``).
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

    overrides = dict(overrides or {})
    for config in sorted({"train.json", *overrides}):
        path = target / "configs" / config
        parser = ConfigParser()
        parser.read_config([str(path), *(str(o) for o in (overlays if config == "train.json" else []))])
        parser.update(dict(overrides.get(config, {})))
        ConfigParser.export_config_file(parser.get(), str(path), indent=4)
    return target


def export_datalist(
    studies: str | os.PathLike,
    out: str | os.PathLike,
    label_tag: str = "final",
    clean_tag: str | None = None,
    val_fraction: float = 0.2,
    seed: int = 0,
    class_names: Sequence[str] | None = None,
) -> dict:
    """Write a datalist JSON of the labelled images of a MONAI Label local datastore; return it.

    Each image with a ``label_tag`` label becomes ``{"image", "label"}`` (plus ``"clean_label"`` when it
    also has a ``clean_tag`` label), with paths relative to ``out``'s folder; a seeded ``val_fraction`` of
    them goes to ``validation``, the rest to ``training``.

    Args:
        studies: the datastore folder given to ``monailabel start_server --studies``.
        out: the datalist JSON to write.
        label_tag: the annotators' label tag (``final`` is what they save).
        clean_tag: a second label tag to export as ``clean_label`` (reference labels for the noise report).
        val_fraction: fraction of the items held out for validation (at least one item).
        seed: seed of the split.
        class_names: written as the datalist's ``labels`` when given.

    Raises:
        ValueError: fewer than two labelled images (training and validation both need one).
    """
    from monailabel.datastore.local import LocalDatastore

    datastore = LocalDatastore(str(studies), extensions=IMAGE_PATTERNS, auto_reload=False)
    out = Path(out)
    base = out.parent.resolve()
    items = []
    for image_id in sorted(datastore.list_images()):
        tags = datastore.get_labels_by_image_id(image_id)
        if label_tag not in tags:
            continue
        item = {
            "image": datastore.get_image_uri(image_id),
            "label": datastore.get_label_uri(tags[label_tag], label_tag),
        }
        if clean_tag and clean_tag in tags:
            item["clean_label"] = datastore.get_label_uri(tags[clean_tag], clean_tag)
        items.append({k: os.path.relpath(v, base) for k, v in item.items()})
    if len(items) < 2:
        raise ValueError(
            f"{studies}: {len(items)} image(s) with a '{label_tag}' label; at least 2 are needed"
        )
    n_val = min(max(1, round(val_fraction * len(items))), len(items) - 1)
    held_out = set(np.random.default_rng(seed).permutation(len(items))[:n_val].tolist())
    training = [item for i, item in enumerate(items) if i not in held_out]
    validation = [item for i, item in enumerate(items) if i in held_out]
    datalist: dict = {"labels": {str(i): n for i, n in enumerate(class_names)}} if class_names else {}
    datalist.update(training=training, validation=validation)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(datalist, indent=2) + "\n")
    return datalist


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m jcas_monai.monailabel_app", description=__doc__.split("\n")[0]
    )
    commands = parser.add_subparsers(dest="command", required=True)
    dep = commands.add_parser("deploy", help="copy the bundle into <app>/model/<name> for MONAI Label")
    dep.add_argument("--app", required=True, help="MONAI Label app folder (e.g. apps/monaibundle)")
    dep.add_argument("--name", default="jcas", help="model name to serve (--conf models NAME)")
    dep.add_argument("--bundle", help="bundle folder (default: found from the working directory)")
    dep.add_argument("--model", help="weights to serve (default: <bundle>/models/model.pt)")
    dep.add_argument(
        "--overlay", nargs="*", help="configs merged over train.json (default: configs/monailabel/train.json)"
    )
    dep.add_argument("--overwrite", action="store_true", help="replace an existing copy")
    exp = commands.add_parser("datalist", help="datalist JSON of a MONAI Label datastore's labelled images")
    exp.add_argument("--studies", required=True, help="the datastore folder (--studies of the server)")
    exp.add_argument("--out", required=True, help="datalist JSON to write")
    exp.add_argument("--label-tag", default="final", help="annotators' label tag (default: final)")
    exp.add_argument("--clean-tag", help="label tag exported as clean_label (reference labels)")
    exp.add_argument("--val-fraction", type=float, default=0.2, help="held-out fraction for validation")
    exp.add_argument("--seed", type=int, default=0, help="seed of the split")
    exp.add_argument("--class-names", nargs="*", help="class names written as the datalist's labels")
    args = parser.parse_args(argv)

    try:
        if args.command == "deploy":
            target = deploy_bundle(
                args.app, args.name, args.bundle, args.model, args.overlay, overwrite=args.overwrite
            )
            print(f"bundle deployed to {target}")
        else:
            data = export_datalist(
                args.studies,
                args.out,
                args.label_tag,
                args.clean_tag,
                args.val_fraction,
                args.seed,
                args.class_names,
            )
            print(f"{args.out}: {len(data['training'])} training, {len(data['validation'])} validation items")
    except (FileExistsError, FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
