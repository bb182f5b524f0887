"""Command line of the label-noise tools.

Generate a noisy copy of a dataset (the default command, ``generate`` may be omitted)::

    python -m jcas_monai.noise [generate] --kind KIND --datalist IN.json --out DIR --seed S [--rate R] \\
        [--num-classes K] [--preview N] [--splits training [validation ...]] [--fraction F] [kind options]

with ``KIND`` one of ellipse, symmetric, asymmetric, dilation_erosion, affine, polygon, and kind options
(each refused for the kinds it does not apply to; defaults: those of the transforms)::

    ellipse           --scale-jitter S --angle-jitter DEG --enlargement E --class-order 1,2,3
    asymmetric        --mapping 1,2,3,0
    dilation_erosion  --radius MIN,MAX --dilation-prob P --class-order 1,2,3
    affine            --rotation DEG --translation T --scale S --class-order 1,2,3
    polygon           --vertices MIN,MAX --vertex-jitter J --class-order 1,2,3

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


def _integers(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",")]
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from err


def _pair(text: str) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in text.split(","))
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected MIN,MAX, got {text!r}") from err
    return low, high


KIND_OPTIONS = {
    "scale_jitter": (("ellipse",), "scale_jitter"),
    "angle_jitter": (("ellipse",), "angle_jitter"),
    "enlargement": (("ellipse",), "enlargement"),
    "class_order": (("ellipse", "dilation_erosion", "affine", "polygon"), "class_order"),
    "mapping": (("asymmetric",), "mapping"),
    "radius": (("dilation_erosion",), "radius"),
    "dilation_prob": (("dilation_erosion",), "dilation_prob"),
    "rotation": (("affine",), "rotation"),
    "translation": (("affine",), "translation"),
    "scale": (("affine",), "scale"),
    "vertices": (("polygon",), "vertices"),
    "vertex_jitter": (("polygon",), "jitter"),
}
"""Command-line option (argparse ``dest``) -> (the kinds it applies to, the transform argument it sets)."""


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
    gen.add_argument(
        "--fraction",
        type=float,
        default=1.0,
        help="share of each noised split's labels that get noise, drawn from --seed (default 1: all)",
    )
    gen.add_argument("--scale-jitter", type=float, help="ellipse: relative scale jitter in [0, 1)")
    gen.add_argument("--angle-jitter", type=float, help="ellipse: angle jitter in degrees")
    gen.add_argument("--enlargement", type=float, help="ellipse: axes times 1 + E (default 0)")
    gen.add_argument(
        "--class-order", type=_integers, help="region kinds: foreground classes in painting order, e.g. 1,2,3"
    )
    gen.add_argument(
        "--mapping", type=_integers, help="asymmetric: class k flips to mapping[k], e.g. 1,2,3,0"
    )
    gen.add_argument("--radius", type=_pair, help="dilation_erosion: disk radius MIN,MAX (fraction of side)")
    gen.add_argument("--dilation-prob", type=float, help="dilation_erosion: probability of dilating a region")
    gen.add_argument("--rotation", type=float, help="affine: largest rotation in degrees")
    gen.add_argument("--translation", type=float, help="affine: largest shift (fraction of region extent)")
    gen.add_argument("--scale", type=float, help="affine: largest relative change of size")
    gen.add_argument("--vertices", type=_pair, help="polygon: number of vertices MIN,MAX")
    gen.add_argument("--vertex-jitter", type=float, help="polygon: largest vertex move (fraction of extent)")

    rep = commands.add_parser("report", help="noise report of a datalist with 'label' and 'clean_label'")
    rep.add_argument("--datalist", required=True, help="datalist JSON whose training items have clean_label")
    rep.add_argument("--num-classes", type=int, help="K (default: datalist 'labels', else max label + 1)")
    rep.add_argument("--out", help="folder for noise_report.json/.md (default: the datalist's folder)")
    return parser


def _noise_kwargs(args: argparse.Namespace, parser: argparse.ArgumentParser) -> dict:
    """Kind-specific transform arguments given on the command line."""
    kwargs = {}
    for name, (kinds, argument) in KIND_OPTIONS.items():
        value = getattr(args, name)
        if value is not None:
            if args.kind not in kinds:
                parser.error(f"--{name.replace('_', '-')} does not apply to --kind {args.kind}")
            kwargs[argument] = value
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
                fraction=args.fraction,
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
