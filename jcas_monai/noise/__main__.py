"""Command line of the label-noise tools.

Generate a noisy copy of a dataset (the default command, ``generate`` may be omitted)::

    python -m jcas_monai.noise [generate] --kind ellipse|symmetric|asymmetric --datalist IN.json --out DIR \\
        --seed S [--rate R] [--num-classes K] [--preview N] [--splits training [validation ...]] \\
        [--scale-jitter S] [--angle-jitter DEG] [--mapping 1,2,3,0]

Report on any datalist whose training items carry ``label`` (noisy) and ``clean_label``::

    python -m jcas_monai.noise report --datalist DATALIST [--num-classes K] [--out DIR]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from jcas_monai.transforms.noise import NOISE_KINDS

from .generate import generate_noisy_dataset
from .report import noise_report, write_report

COMMANDS = ("generate", "report")


def _mapping(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",")]
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected comma-separated class indices, got {text!r}") from err


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m jcas_monai.noise",
        description="Synthetic label noise (JCAS, MICCAI 2022): noisy dataset copies and noise reports. "
        "Without a command, 'generate' is run.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    gen = commands.add_parser(
        "generate", help="write noisy copies of the labels, a new datalist and a report"
    )
    gen.add_argument("--kind", required=True, choices=NOISE_KINDS, help="noise kind")
    gen.add_argument("--datalist", required=True, help="source decathlon-style datalist JSON")
    gen.add_argument("--out", required=True, help="output folder (labels/, datalist.json, noise_report.*)")
    gen.add_argument(
        "--seed", type=int, default=0, help="base seed; each label is seeded from it and its path"
    )
    gen.add_argument("--rate", type=float, default=0.5, help="flip probability (symmetric, asymmetric)")
    gen.add_argument("--num-classes", type=int, help="K (default: datalist 'labels', else max label + 1)")
    gen.add_argument("--preview", type=int, default=0, metavar="N", help="write preview.png with N rows")
    gen.add_argument("--splits", nargs="+", default=["training"], help="splits whose labels get noise")
    gen.add_argument("--scale-jitter", type=float, help="ellipse: relative scale jitter in [0, 1)")
    gen.add_argument("--angle-jitter", type=float, help="ellipse: angle jitter in degrees")
    gen.add_argument("--mapping", type=_mapping, help="asymmetric: class k flips to mapping[k], e.g. 1,2,3,0")

    rep = commands.add_parser("report", help="noise report of a datalist with 'label' and 'clean_label'")
    rep.add_argument("--datalist", required=True, help="datalist JSON whose training items have clean_label")
    rep.add_argument("--num-classes", type=int, help="K (default: datalist 'labels', else max label + 1)")
    rep.add_argument("--out", help="folder for noise_report.json/.md (default: the datalist's folder)")
    return parser


def _noise_kwargs(args: argparse.Namespace, parser: argparse.ArgumentParser) -> dict:
    """Kind-specific transform arguments given on the command line."""
    allowed = {"ellipse": ("scale_jitter", "angle_jitter"), "asymmetric": ("mapping",)}.get(args.kind, ())
    kwargs = {}
    for name in ("scale_jitter", "angle_jitter", "mapping"):
        value = getattr(args, name)
        if value is not None:
            if name not in allowed:
                parser.error(f"--{name.replace('_', '-')} does not apply to --kind {args.kind}")
            kwargs[name] = value
    return kwargs


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (2 on invalid data, with the reason on stderr)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in (*COMMANDS, "-h", "--help"):
        argv.insert(0, "generate")
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "generate":
            report = generate_noisy_dataset(
                args.datalist,
                args.out,
                args.kind,
                seed=args.seed,
                rate=args.rate,
                num_classes=args.num_classes,
                splits=args.splits,
                preview=args.preview,
                **_noise_kwargs(args, parser),
            )
            out = args.out
        else:
            report = noise_report(args.datalist, args.num_classes)
            out = args.out or str(Path(args.datalist).resolve().parent)
            write_report(report, out)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(
        f"{report['num_images']} labels, K = {report['num_classes']}: class noise rate "
        f"{report['class_noise_rate']:.4f}, affinity noise rate {report['affinity_noise_rate']:.4f}; "
        f"report in {Path(out) / 'noise_report.md'}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
