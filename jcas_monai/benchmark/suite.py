"""The four benchmark parts, their targets and the report they produce.

1. One training iteration, baseline vs JCAS, at the paper setting and at the bundle default.
2. Factorised DAR + affinity pair loss vs the dense ``B x N x N`` reference, per grid size.
3. Inference latency of one 256 x 320 frame: the bundle default network eager, in TorchScript and in ONNX
   Runtime, and the paper network eager.
4. The share of a training iteration spent waiting for data, in the bundle's own trainer.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

import monai
import torch

from jcas_monai.benchmark.measure import alloc_peak, available_memory, rss_peak, time_alternating
from jcas_monai.benchmark.workloads import (
    INFERENCE_RUNTIMES,
    VARIANTS,
    bundle_setting,
    make_inference,
    make_pairwise_step,
    make_train_step,
    paper_setting,
    variant_setting,
)

__all__ = ["TARGETS", "BenchmarkOptions", "run_benchmark"]

TARGETS = {
    "train_time_ratio": ("JCAS / baseline iteration time, paper setting", "<=", 1.20),
    "train_memory_ratio": ("JCAS / baseline peak memory, paper setting", "<=", 1.25),
    "pairwise_speedup": ("dense / factorised time, DAR + pair loss, 64 x 64", ">=", 10.0),
    "pairwise_memory_ratio": ("dense / factorised peak memory, 64 x 64", ">=", 20.0),
    "pairwise_max_abs_diff": ("factorised vs dense, max abs difference (all grids)", "<=", 1e-5),
    "data_wait_share": ("data waiting share of a training iteration, bundle default", "<", 0.10),
}
"""Target id -> (description, comparison, threshold)."""


@dataclasses.dataclass
class BenchmarkOptions:
    """What to run and how hard. :meth:`full` and :meth:`quick` give the two command-line presets.

    Attributes:
        preset: ``"full"``, ``"quick"`` or ``"custom"`` (recorded in the report).
        device: ``"cpu"`` or ``"cuda"``.
        config_file: the bundle's ``train.json`` (bundle default setting and trainer).
        paper_depth, paper_width: backbone of the paper setting (101 / 64 in the paper).
        bundle_overrides: config ids to override in the bundle setting and trainer (tests only).
        train_warmup, train_iterations: untimed and timed rounds per training setting.
        bundle_train_iterations: timed rounds for the (cheaper) bundle setting.
        rss: also measure peak RSS in fresh processes (CPU only).
        grids: pair-wise grid sizes; ``pairwise_batch``, ``pairwise_channels``, ``pairwise_classes``.
        pairwise_iterations: timed rounds per grid (after the profiled comparison run, which is the warm-up).
        dense_memory_fraction: run the dense reference only if its extrapolated peak is below this
            fraction of the available memory.
        inference_warmup, inference_iterations: untimed and timed rounds of the inference latency (the
            TorchScript profiling executor optimises over its first runs).
        inference_runtimes: runtimes of the bundle network's latency (see
            :data:`~jcas_monai.benchmark.workloads.INFERENCE_RUNTIMES`); the paper network runs eager.
        data_epochs, data_iterations_per_epoch: length of the trainer run of part 4 (its first epoch is
            the warm-up and is not counted).
        paper_setting_override: a setting dict used instead of the paper setting (tests only).
    """

    preset: str = "custom"
    device: str = "cpu"
    config_file: str = "bundle/configs/train.json"
    paper_depth: int = 101
    paper_width: int = 64
    bundle_overrides: dict[str, Any] = dataclasses.field(default_factory=dict)
    train_warmup: int = 1
    train_iterations: int = 5
    bundle_train_iterations: int = 8
    rss: bool = True
    grids: Sequence[int] = (32, 64, 96, 128)
    pairwise_batch: int = 3
    pairwise_channels: int = 256
    pairwise_classes: int = 4
    pairwise_iterations: int = 3
    dense_memory_fraction: float = 0.5
    inference_warmup: int = 3
    inference_iterations: int = 5
    inference_runtimes: Sequence[str] = INFERENCE_RUNTIMES
    data_epochs: int = 3
    data_iterations_per_epoch: int = 4
    paper_setting_override: dict[str, Any] | None = None

    @classmethod
    def full(cls, **kwargs: Any) -> BenchmarkOptions:
        """The full run (several minutes on two CPU cores)."""
        return cls(**{"preset": "full", **kwargs})

    @classmethod
    def quick(cls, **kwargs: Any) -> BenchmarkOptions:
        """Under a minute on two CPU cores: ResNet-18 (width 16) stands in for ResNet-101, grids 32 and
        64, one timed round per figure, no fresh-process RSS."""
        values = {
            "preset": "quick",
            "paper_depth": 18,
            "paper_width": 16,
            "train_warmup": 1,
            "train_iterations": 1,
            "bundle_train_iterations": 2,
            "rss": False,
            "grids": (32, 64),
            "pairwise_iterations": 1,
            "inference_iterations": 2,
            "data_epochs": 2,
            "data_iterations_per_epoch": 2,
        }
        return cls(**{**values, **kwargs})


def _ratio(num: float | None, den: float | None) -> float | None:
    return None if num is None or den is None or den == 0 else num / den


def _rss_spec(kind: str, device: torch.device, **fields: Any) -> dict[str, Any]:
    return {"kind": kind, "device": str(device), "threads": torch.get_num_threads(), **fields}


def _training(setting: dict[str, Any], device: torch.device, warmup: int, iterations: int, rss: bool) -> dict:
    """Part 1 for one setting: time, allocator peak and (optionally) fresh-process RSS of both variants."""
    variants = {v: variant_setting(setting, v) for v in VARIANTS}
    steps = {v: make_train_step(variants[v], device) for v in VARIANTS}
    timing = time_alternating(steps, device, warmup, iterations)
    result: dict[str, Any] = {"setting": setting["name"], "config": setting}
    for v in VARIANTS:
        result[v] = {**timing[v], "alloc_peak_bytes": alloc_peak(steps[v], device)[0]}
    del steps
    for v in VARIANTS:
        peak = rss_peak(_rss_spec("train", device, setting=variants[v])) if rss else {}
        result[v].update(peak)
    result["ratios"] = {
        "time": _ratio(result["jcas"]["median_s"], result["baseline"]["median_s"]),
        "alloc": _ratio(result["jcas"]["alloc_peak_bytes"], result["baseline"]["alloc_peak_bytes"]),
        "rss": _ratio(result["jcas"].get("rss_peak_bytes"), result["baseline"].get("rss_peak_bytes")),
    }
    return result


def _max_abs_diffs(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor]) -> dict[str, float]:
    names = ("p_dar", "loss", "grad_logits", "grad_features", "grad_t_a")
    return {name: (x.double() - y.double()).abs().max().item() for name, x, y in zip(names, a, b)}


def _pairwise(opts: BenchmarkOptions, device: torch.device) -> list[dict[str, Any]]:
    """Part 2: per grid, factorised vs dense time, peak memory and the largest output/gradient difference."""
    results: list[dict[str, Any]] = []
    dense_bytes_per_pair: float | None = None
    shape = {
        "batch": opts.pairwise_batch,
        "num_classes": opts.pairwise_classes,
        "channels": opts.pairwise_channels,
    }
    for grid in sorted(opts.grids):
        n = grid * grid
        pairs = opts.pairwise_batch * n * n
        entry: dict[str, Any] = {"grid": grid, "n": n, **shape}
        steps = {"factorised": make_pairwise_step(grid, "factorised", device, *shape.values())}
        if dense_bytes_per_pair is not None:
            predicted = dense_bytes_per_pair * pairs
            budget = opts.dense_memory_fraction * available_memory(device)
            if predicted > budget:
                entry["dense"] = {
                    "skipped": f"needs ~{predicted / 2**30:.1f} GiB (extrapolated from the smallest grid), "
                    f"{opts.dense_memory_fraction:.0%} of the available memory is {budget / 2**30:.1f} GiB"
                }
        if "dense" not in entry:
            steps["dense"] = make_pairwise_step(grid, "dense", device, *shape.values())
        outputs = {}
        for name, step in steps.items():  # the profiled run is also the warm-up and the comparison run
            peak, outputs[name] = alloc_peak(step, device)
            entry[name] = {"alloc_peak_bytes": peak}
        if "dense" in outputs:
            entry["max_abs_diff"] = _max_abs_diffs(outputs["factorised"], outputs["dense"])
        del outputs
        timing = time_alternating(steps, device, 0, opts.pairwise_iterations)
        for name in steps:
            entry[name].update(timing[name])
            if opts.rss and device.type == "cpu":
                entry[name].update(rss_peak(_rss_spec("pairwise", device, grid=grid, impl=name, **shape)))
        if "dense" in steps:
            dense_bytes_per_pair = entry["dense"]["alloc_peak_bytes"] / pairs
            entry["speedup"] = _ratio(entry["dense"]["median_s"], entry["factorised"]["median_s"])
            entry["memory_ratio"] = {
                "alloc": _ratio(entry["dense"]["alloc_peak_bytes"], entry["factorised"]["alloc_peak_bytes"]),
                "rss": _ratio(
                    entry["dense"].get("rss_peak_bytes"), entry["factorised"].get("rss_peak_bytes")
                ),
            }
        results.append(entry)
    return results


def _inference(
    bundle: dict[str, Any], paper: dict[str, Any], device: torch.device, opts: BenchmarkOptions
) -> list[dict]:
    """Part 3: eval-mode latency of one 256 x 320 frame, the bundle network in each runtime, the paper
    network eager; a runtime that cannot run here is recorded with the reason instead of figures."""
    size = (256, 320)
    cases = [(bundle, runtime) for runtime in opts.inference_runtimes] + [(paper, "eager")]
    fns, rows = {}, []
    for setting, runtime in cases:
        row = {"setting": setting["name"], "runtime": runtime, "size": list(size)}
        if runtime == "onnxruntime" and device.type != "cpu":
            row["skipped"] = "ONNX Runtime is measured on the CPU only"
        else:
            try:
                fns[f"{setting['name']} / {runtime}"] = make_inference(setting, device, size, runtime)
            except ImportError as err:
                row["skipped"] = f"{err} (pip install -r requirements-deploy.txt)"
        rows.append(row)
    timing = time_alternating(fns, device, opts.inference_warmup, opts.inference_iterations)
    for row in rows:
        row.update(timing.get(f"{row['setting']} / {row['runtime']}", {}))
    return rows


def _data_wait(opts: BenchmarkOptions) -> dict[str, Any]:
    """Part 4: run the bundle's trainer on a small synthetic dataset and time data waiting vs iterations."""
    from ignite.engine import Events
    from monai.bundle import ConfigParser, ConfigWorkflow

    parser = ConfigParser()
    parser.read_config(opts.config_file)
    batch_size = opts.bundle_overrides.get("batch_size", parser["batch_size"])
    with tempfile.TemporaryDirectory() as tmp:
        workflow = ConfigWorkflow(
            config_file=opts.config_file,
            workflow_type="train",
            logging_file=False,
            bundle_root=os.path.dirname(os.path.dirname(os.path.abspath(opts.config_file))),
            output_dir=tmp,
            dataset_dir=os.path.join(tmp, "data"),
            synthetic={
                "seed": 0,
                "num_train": batch_size * opts.data_iterations_per_epoch,
                "num_val": 1,
                "num_test": 0,
            },
            max_epochs=opts.data_epochs,
            val_interval=opts.data_epochs + 1,
            **opts.bundle_overrides,
        )
        workflow.initialize()
        trainer = workflow.parser.get_parsed_content("train#trainer")
        marks: dict[str, float] = {}
        rows: list[dict[str, float]] = []

        def mark(name: str) -> Callable[[Any], None]:
            def handler(engine: Any) -> None:
                marks[name] = time.perf_counter()
                if name == "iteration_completed":
                    rows.append(
                        {
                            "epoch": engine.state.epoch,
                            "wait_s": marks["get_batch_completed"] - marks["get_batch_started"],
                            "compute_s": marks["iteration_completed"] - marks["iteration_started"],
                            "total_s": marks["iteration_completed"] - marks["get_batch_started"],
                        }
                    )

            return handler

        for event, name in (
            (Events.GET_BATCH_STARTED, "get_batch_started"),
            (Events.GET_BATCH_COMPLETED, "get_batch_completed"),
            (Events.ITERATION_STARTED, "iteration_started"),
            (Events.ITERATION_COMPLETED, "iteration_completed"),
        ):
            trainer.add_event_handler(event, mark(name))
        trainer.run()
        workflow.finalize()
    counted = [r for r in rows if r["epoch"] > 1] or rows
    wait, total = sum(r["wait_s"] for r in counted), sum(r["total_s"] for r in counted)
    return {
        "batch_size": batch_size,
        "epochs": opts.data_epochs,
        "iterations_counted": len(counted),
        "note": "first epoch excluded (warm-up)" if len(counted) < len(rows) else "all iterations counted",
        "wait_s": wait,
        "iteration_s": total,
        "share": _ratio(wait, total),
        "iterations": rows,
    }


def _check(target: str, value: float | None, note: str = "", applicable: bool = True) -> dict[str, Any]:
    description, op, threshold = TARGETS[target]
    met = None
    if value is not None and applicable:
        met = {"<=": value <= threshold, ">=": value >= threshold, "<": value < threshold}[op]
    return {
        "id": target,
        "description": description,
        "value": value,
        "op": op,
        "threshold": threshold,
        "met": met,
        "note": note,
    }


def _targets(training: list[dict], pairwise: list[dict], data_wait: dict) -> list[dict[str, Any]]:
    paper = training[0]
    real = paper["setting"] == "paper"
    stand_in = "" if real else f"stand-in '{paper['setting']}', not judged"
    checks = [_check("train_time_ratio", paper["ratios"]["time"], stand_in, real)]
    for kind in ("alloc", "rss"):
        if paper["ratios"][kind] is not None:
            checks.append(
                _check("train_memory_ratio", paper["ratios"][kind], f"{kind} {stand_in}".strip(), real)
            )
    at64 = next((p for p in pairwise if p["grid"] == 64 and "speedup" in p), None)
    missing = "not measured (needs grid 64 with the dense reference)"
    checks.append(_check("pairwise_speedup", at64 and at64["speedup"], "" if at64 else missing))
    for kind in ("alloc", "rss"):
        ratio = at64 and at64["memory_ratio"][kind]
        if ratio is not None or kind == "alloc":
            checks.append(_check("pairwise_memory_ratio", ratio, kind if at64 else missing))
    compared = [p for p in pairwise if "max_abs_diff" in p]
    worst = max((max(p["max_abs_diff"].values()) for p in compared), default=None)
    checks.append(_check("pairwise_max_abs_diff", worst, f"grids {[p['grid'] for p in compared]}"))
    checks.append(_check("data_wait_share", data_wait["share"]))
    return checks


def run_benchmark(opts: BenchmarkOptions, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the four parts and return the report (JSON-able)."""
    device = torch.device(opts.device)
    started = time.perf_counter()
    paper = opts.paper_setting_override or paper_setting(opts.paper_depth, opts.paper_width)
    bundle = bundle_setting(opts.config_file, opts.bundle_overrides)
    rss = opts.rss and device.type == "cpu"
    log(f"[1/4] training iteration, {paper['name']} setting")
    training = [_training(paper, device, opts.train_warmup, opts.train_iterations, rss)]
    log("[1/4] training iteration, bundle default")
    training.append(_training(bundle, device, opts.train_warmup, opts.bundle_train_iterations, rss))
    log(f"[2/4] factorised vs dense DAR + pair loss, grids {list(opts.grids)}")
    pairwise = _pairwise(opts, device)
    log("[3/4] inference latency")
    inference = _inference(bundle, paper, device, opts)
    log("[4/4] data waiting in the bundle trainer")
    data_wait = _data_wait(opts)
    return {
        "meta": {
            "device": str(device),
            "device_name": torch.cuda.get_device_name(device)
            if device.type == "cuda"
            else platform.processor() or platform.machine(),
            "threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(),
            "torch": torch.__version__,
            "monai": monai.__version__,
            "python": platform.python_version(),
            "preset": opts.preset,
            "options": {k: v for k, v in dataclasses.asdict(opts).items() if k != "paper_setting_override"},
            "seconds": time.perf_counter() - started,
        },
        "training": training,
        "pairwise": pairwise,
        "inference": inference,
        "data_wait": data_wait,
        "targets": _targets(training, pairwise, data_wait),
    }
