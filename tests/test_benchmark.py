"""Smoke test of the benchmark on tiny settings: report structure and factorised-vs-dense exactness.

Times are never asserted (this is a correctness check, not a timed test).
"""

import importlib.util
import json
import re
from pathlib import Path

import pytest

from jcas_monai.benchmark.measure import rss_peak
from jcas_monai.benchmark.report import format_report
from jcas_monai.benchmark.suite import TARGETS, BenchmarkOptions, run_benchmark
from jcas_monai.benchmark.workloads import VARIANTS, paper_setting

CONFIG = str(Path(__file__).resolve().parents[1] / "bundle" / "configs" / "train.json")


def _tiny_paper_setting():
    setting = paper_setting(depth=18, width=8)
    setting["network"].update(
        affinity_channels=[8, 16], grid_size=[8, 8], eval_grid_size=[4, 4], head_dilations=[1, 2]
    )
    setting.update(spatial_size=[64, 80], batch_size=2)
    return setting


@pytest.fixture(scope="module")
def report():
    opts = BenchmarkOptions.quick(
        config_file=CONFIG,
        paper_setting_override=_tiny_paper_setting(),
        bundle_overrides={
            "spatial_size": [64, 80],
            "crop_size": [48, 64],
            "grid_size": [6, 8],
            "batch_size": 2,
            "backbone#width": 8,
        },
        train_warmup=0,
        bundle_train_iterations=1,
        grids=(6, 8),
        pairwise_batch=2,
        pairwise_channels=8,
        inference_iterations=1,
        data_iterations_per_epoch=1,
    )
    return run_benchmark(opts, log=lambda _: None)


def test_report_structure(report):
    json.loads(json.dumps(report))  # JSON-able
    assert set(report) == {"meta", "training", "pairwise", "inference", "data_wait", "targets"}
    assert [t["setting"] for t in report["training"]][1] == "bundle default"
    for training in report["training"]:
        for variant in VARIANTS:
            assert training[variant]["median_s"] > 0 and training[variant]["alloc_peak_bytes"] > 0
        assert set(training["ratios"]) == {"time", "alloc", "rss"}
    bundle = report["training"][1]["config"]
    # the bundle trains on crops: its training step runs at crop_size with the crop's grid
    assert bundle["spatial_size"] == [48, 64] and bundle["network"]["grid_size"] == [6, 8]
    assert [p["grid"] for p in report["pairwise"]] == [6, 8]
    inference = report["inference"]
    assert [(i["runtime"], i["size"]) for i in inference] == [
        (runtime, [256, 320]) for runtime in ("eager", "torchscript", "onnxruntime", "eager")
    ]
    assert [i["setting"] for i in inference] == ["bundle default"] * 3 + [report["training"][0]["setting"]]
    onnx_missing = importlib.util.find_spec("onnxruntime") is None
    assert all(i["median_s"] > 0 for i in inference if not (onnx_missing and i["runtime"] == "onnxruntime"))
    wait = report["data_wait"]
    assert wait["iterations_counted"] == 1 and 0 <= wait["share"] <= 1
    assert {c["id"] for c in report["targets"]} == set(TARGETS)
    text = format_report(report)
    assert "Targets" in text
    latency = text.split("3. Inference latency")[1].split("4. Data waiting")[0]
    for runtime in ("eager", "torchscript", "onnxruntime"):
        assert re.search(rf"^bundle default +{runtime} +(\d|skipped)", latency, re.MULTILINE), latency


def test_factorised_equals_dense(report):
    for entry in report["pairwise"]:
        assert set(entry["max_abs_diff"]) == {"p_dar", "loss", "grad_logits", "grad_features", "grad_t_a"}
        assert max(entry["max_abs_diff"].values()) < 1e-5
    check = next(c for c in report["targets"] if c["id"] == "pairwise_max_abs_diff")
    assert check["met"] is True


@pytest.mark.slow  # a fresh interpreter importing torch and MONAI takes several seconds
def test_fresh_process_rss_probe():
    spec = {
        "kind": "pairwise",
        "device": "cpu",
        "threads": 1,
        "grid": 8,
        "impl": "dense",
        "batch": 2,
        "num_classes": 4,
        "channels": 8,
    }
    peak = rss_peak(spec, timeout=300)
    assert "error" not in peak, peak
    assert peak["rss_peak_bytes"] >= 0 and peak["rss_before_bytes"] > 0
