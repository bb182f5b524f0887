"""Command line of the study runner; see :mod:`jcas_monai.reproduce`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from .grid import Study, StudyError, clean_label_variants, run_study, variant_overlays
from .report import write_reports

PAPER_NOISES = "ellipse,symmetric50,asymmetric50"
PAPER_VARIANTS = "baseline,affinity,dar,calc,jcas,upper"


def _names(text: str) -> list[str]:
    return [n.strip() for n in text.split(",") if n.strip()]


def _seeds(text: str) -> list[int]:
    try:
        return [int(n) for n in _names(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, e.g. 0,1,2, got {text!r}"
        ) from None


def _override(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m jcas_monai.reproduce",
        description="Noise kind x variant x seed study of JCAS (Guo & Yuan, MICCAI 2022) through the bundle: "
        "each cell trains and evaluates in a subprocess; finished cells are skipped, interrupted ones resume. "
        "Writes results.csv, results.md, results_seeds.csv, jac_vs_epoch_<noise>.png and matrices/ into "
        "--out.",
    )
    parser.add_argument(
        "--out",
        required=True,
        type=Path,
        help="results folder (one <noise>/<variant>/seed<k> folder per cell)",
    )
    parser.add_argument(
        "--datalist", type=Path, help="datalist JSON for every cell (default: the data overlay's)"
    )
    parser.add_argument(
        "--data", help="data overlay: a name in configs/data (synthetic, endovis18) or a JSON file"
    )
    parser.add_argument(
        "--noise",
        type=_names,
        default=_names(PAPER_NOISES),
        help=f"noise overlays, comma-separated ({PAPER_NOISES})",
    )
    parser.add_argument(
        "--variants",
        type=_names,
        default=_names(PAPER_VARIANTS),
        help="variant overlays in configs/ablation or configs/peers, comma-separated (default "
        f"{PAPER_VARIANTS}; available: {', '.join(variant_overlays())})",
    )
    parser.add_argument("--epochs", type=int, help="total epochs of every variant (default: the config's)")
    parser.add_argument(
        "--warmup-epochs",
        type=int,
        help="warm-up epochs of the two-stage variants (default: half of --epochs)",
    )
    parser.add_argument(
        "--preset",
        help="preset overlay in configs, e.g. 'paper' (needs the ImageNet ResNet-101 weights and a GPU)",
    )
    seeds = parser.add_mutually_exclusive_group()
    seeds.add_argument(
        "--seeds",
        type=_seeds,
        default=[0],
        help="training seeds (config key 'seed'), comma-separated, one cell each: the tables give mean ± sd "
        "over them and paired differences against the baseline (default: 0)",
    )
    seeds.add_argument("--seed", type=int, help="a single training seed, as --seeds N")
    parser.add_argument(
        "--override",
        type=_override,
        nargs="+",
        action="extend",
        default=[],
        metavar="KEY=VALUE",
        help="config overrides for every cell, e.g. batch_size=4 backbone#width=8",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the study; returns 0 when every cell finished, 1 when some failed, 2 on invalid options."""
    args = _parser().parse_args(argv)
    try:
        study = Study(
            out=args.out,
            noises=args.noise,
            variants=args.variants,
            datalist=args.datalist,
            data=args.data,
            preset=args.preset,
            epochs=args.epochs,
            warmup_epochs=args.warmup_epochs,
            seeds=args.seeds if args.seed is None else [args.seed],
            overrides=dict(args.override),
        )
        cells = study.cells()
        print(f"{len(cells)} cells ({', '.join(map(str, cells))}) -> {study.out}", flush=True)
        failed = run_study(study)
    except StudyError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted: run the same command again to resume", file=sys.stderr)
        return 130
    written = write_reports(study.out, clean_label_variants(study.repo))
    if written:
        print(f"results: {written[1]}, {written[0]}")
    if failed:
        print(
            f"{len(failed)} cell(s) failed: {', '.join(map(str, failed))}; see their train.log / eval.log",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
