"""Command line: ``python -m jcas_monai.benchmark [--quick] [--device cpu|cuda] [--json OUT]``.

Runs the four parts of :mod:`jcas_monai.benchmark.suite`, prints the table with the targets and writes
the full report (every measured time, the configs benchmarked, the targets) as JSON. Run it from the
repository root (or pass ``--config`` with the bundle's ``train.json``).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

import torch

from jcas_monai.benchmark.report import format_report
from jcas_monai.benchmark.suite import BenchmarkOptions, run_benchmark


def main(argv: Sequence[str] | None = None) -> None:
    """Parse the arguments, run the benchmark, print the table and write the JSON report."""
    parser = argparse.ArgumentParser(
        prog="python -m jcas_monai.benchmark", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--quick", action="store_true", help="the under-a-minute preset (ResNet-18 stand-in)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--json", default=None, metavar="OUT", help="write the report to this JSON file")
    parser.add_argument("--config", default="bundle/configs/train.json", help="the bundle's train.json")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (default: torch's choice; 1 gives steadier figures on a shared machine)",
    )
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")
    if args.threads:
        torch.set_num_threads(args.threads)
    preset = BenchmarkOptions.quick if args.quick else BenchmarkOptions.full
    report = run_benchmark(
        preset(device=args.device, config_file=args.config), log=lambda m: print(m, flush=True)
    )
    report["meta"]["command"] = " ".join(["python -m jcas_monai.benchmark", *(argv or sys.argv[1:])])
    print()
    print(format_report(report))
    if args.json:
        with open(args.json, "w") as out:
            json.dump(report, out, indent=2)
        print(f"\nreport written to {args.json}")


if __name__ == "__main__":
    main()
