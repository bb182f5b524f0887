"""Command line of out-of-sample label-issue finding (:mod:`jcas_monai.label_issues.folds`)::

    python -m jcas_monai.label_issues --folds K --out DIR [--config_file FILE ...] [--seed S] \\
        [--override KEY=VALUE ...]

``--config_file`` takes the training configs (default: the bundle's ``configs/train.json``), as files or as
the bundle's list form ``"['bundle/configs/train.json','configs/noise/ellipse.json']"``; overrides apply to
every fold's training and scoring, e.g. ``datalist=data/ellipse/datalist.json max_epochs=20
label_issues_clean_key=clean_label``. Run the same command again to resume.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections.abc import Sequence
from pathlib import Path

from jcas_monai.data.datalist import find_bundle_root
from jcas_monai.engines import report_root_cause, root_cause

from .folds import run_folds


def _literal(text: str) -> object:
    """A command-line value as the bundle's command line reads it (a Python literal, else the string)."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _override(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, _literal(value)


def _configs(values: Sequence[str]) -> list[str]:
    """Config files given one by one, or as the bundle's list form ``"['a.json','b.json']"``."""
    files: list[str] = []
    for value in values:
        parsed = _literal(value)
        files += [str(v) for v in parsed] if isinstance(parsed, list) else [value]
    return files


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m jcas_monai.label_issues",
        description="Out-of-sample label-issue scores: split the training split into K folds, train the bundle "
        "on the other folds for each, score each fold with its own model, and write one ranking for all into "
        "<out>/label_issues. Finished folds are not trained again; run the same command again to resume.",
    )
    parser.add_argument("--folds", type=int, required=True, help="number of folds K (at least 2)")
    parser.add_argument(
        "--out", type=Path, required=True, help="study folder (folds/fold_<i>, label_issues/)"
    )
    parser.add_argument(
        "--config_file",
        nargs="+",
        default=None,
        help="training configs, train.json first (default: the bundle's configs/train.json)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the fold assignment (default: 0)")
    parser.add_argument(
        "--override",
        type=_override,
        nargs="+",
        action="extend",
        default=[],
        metavar="KEY=VALUE",
        help="config overrides for every fold, e.g. datalist=data/ellipse/datalist.json max_epochs=20",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the folds; 0 on success, 2 on invalid input (the reason on stderr), 130 when interrupted."""
    args = _parser().parse_args(argv)
    report_root_cause()
    overrides = dict(args.override)
    configs = (
        _configs(args.config_file)
        if args.config_file
        else [str(Path(overrides.get("bundle_root") or find_bundle_root()) / "configs" / "train.json")]
    )
    try:
        run_folds(configs, args.out, args.folds, args.seed, overrides)
    except (FileNotFoundError, RuntimeError, ValueError) as err:
        cause = root_cause(err)
        if not isinstance(cause, (FileNotFoundError, ValueError)):
            raise
        print(f"error: {cause}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted: run the same command again to resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
