"""Command line of the MONAI Label helpers::

python -m jcas_monai.monailabel_app deploy --app apps/jcas [--name jcas] [--model PATH]
python -m jcas_monai.monailabel_app datalist --studies DIR --out DIR/datalist.json [--clean-tag TAG]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from .datastore import export_datalist
from .deploy import deploy_bundle, serves_jcas_app

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m jcas_monai.monailabel_app", description="MONAI Label helpers of the JCAS bundle"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    dep = commands.add_parser(
        "deploy", help="copy the bundle into <app>/model/<name> for MONAI Label, and the app's main.py"
    )
    dep.add_argument(
        "--app", required=True, help="MONAI Label app folder (created when missing), e.g. apps/jcas"
    )
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
            if not serves_jcas_app(args.app):
                print(
                    f"{Path(args.app) / 'main.py'} is the app's own and was kept: it serves the bundle without "
                    "the label-issue scoring and review strategy (deploy into a new folder for those)"
                )
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
