"""Plain-text table of a benchmark report (the dict returned by :func:`~jcas_monai.benchmark.suite.run_benchmark`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["format_report"]


def _s(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds * 1e3:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


def _mib(value: int | None) -> str:
    return "-" if value is None else f"{value / 2**20:.0f} MiB"


def _x(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}x"


def _ratio(num: float | None, den: float | None) -> float | None:
    return None if num is None or den is None or den == 0 else num / den


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()
    return [line(header), line(["-" * w for w in widths]), *(line(r) for r in rows)]


def format_report(report: dict[str, Any]) -> str:
    """The figures, ratios and targets of ``report`` as aligned text tables."""
    meta = report["meta"]
    out = [
        (
            f"JCAS benchmark - {meta['device']} ({meta['device_name']}), {meta['threads']} threads, "
            f"torch {meta['torch']}, monai {meta['monai']}, {meta['seconds']:.0f} s"
        ),
        (
            "Times: medians of alternating runs after warm-up. Peak memory: 'alloc' = PyTorch allocator peak "
            "of one step above its start; 'rss' = peak RSS of one step in a fresh process."
        ),
        *(
            [
                "--quick: one timed round per figure and a ResNet-18 stand-in; indicative only, targets need the full run."
            ]
            if meta["preset"] == "quick"
            else []
        ),
        "",
        "1. Training iteration (forward, loss, backward, optimiser step)",
    ]
    rows = []
    for t in report["training"]:
        cfg = t["config"]
        net = cfg["network"]
        bb = net["backbone"]
        desc = (
            f"{t['setting']}: ResNet-{bb.get('depth')} w{bb.get('width')}, {cfg['spatial_size'][0]}x"
            f"{cfg['spatial_size'][1]}, grid {net['grid_size'][0]}x{net['grid_size'][1]}, batch {cfg['batch_size']}"
        )
        for v in ("baseline", "jcas"):
            r = t[v]
            rows.append(
                [
                    desc if v == "baseline" else "",
                    v,
                    _s(r["median_s"]),
                    _mib(r["alloc_peak_bytes"]),
                    _mib(r.get("rss_peak_bytes")),
                ]
            )
        ratios = t["ratios"]
        rows.append(["", "jcas/baseline", _x(ratios["time"]), _x(ratios["alloc"]), _x(ratios["rss"])])
    out += _table(["setting", "variant", "time", "alloc peak", "rss peak"], rows)

    out += ["", "2. DAR + affinity pair loss (one branch, forward + backward): factorised vs dense B x N x N"]
    rows = []
    for p in report["pairwise"]:
        f, d = p["factorised"], p.get("dense", {})
        diff = max(p["max_abs_diff"].values()) if "max_abs_diff" in p else None
        mem = p.get("memory_ratio", {})
        rows.append(
            [
                f"{p['grid']}x{p['grid']} (N={p['n']})",
                _s(f["median_s"]),
                _s(d.get("median_s")) if "skipped" not in d else "skipped",
                _x(p.get("speedup"), 1),
                _mib(f["alloc_peak_bytes"]),
                _mib(d.get("alloc_peak_bytes")),
                _x(mem.get("alloc"), 1),
                _mib(f.get("rss_peak_bytes")),
                _mib(d.get("rss_peak_bytes")),
                _x(mem.get("rss"), 1),
                "-" if diff is None else f"{diff:.1e}",
            ]
        )
    out += _table(
        [
            "grid",
            "fact. time",
            "dense time",
            "speedup",
            "fact. alloc",
            "dense alloc",
            "ratio",
            "fact. rss",
            "dense rss",
            "ratio",
            "max|diff|",
        ],
        rows,
    )
    out += [
        f"   dense at {p['grid']}x{p['grid']} skipped: {p['dense']['skipped']}"
        for p in report["pairwise"]
        if "skipped" in p.get("dense", {})
    ]
    p0 = report["pairwise"][0] if report["pairwise"] else None
    if p0:
        out.append(f"   B={p0['batch']}, K={p0['num_classes']}, C={p0['channels']}; corrected BCE (T_A)")

    out += ["", "3. Inference latency, one 256 x 320 frame (batch 1, eval, no grad)"]
    eager = {i["setting"]: i.get("median_s") for i in report["inference"] if i["runtime"] == "eager"}
    rows = [
        [i["setting"], i["runtime"], _s(i.get("median_s")), _x(_ratio(eager.get(i["setting"]), i.get("median_s")))]
        if "skipped" not in i
        else [i["setting"], i["runtime"], "skipped", i["skipped"]]
        for i in report["inference"]
    ]
    out += _table(["network", "runtime", "latency", "speed vs eager"], rows)

    w = report["data_wait"]
    out += [
        "",
        "4. Data waiting in the bundle's default trainer",
        (
            f"   {w['iterations_counted']} iterations of batch {w['batch_size']} ({w['note']}): waiting "
            f"{_s(w['wait_s'])} of {_s(w['iteration_s'])} = {100 * w['share']:.1f}%"
        ),
    ]

    out += ["", "Targets"]
    rows = []
    for c in report["targets"]:
        value = c["value"]
        shown = (
            "-"
            if value is None
            else (f"{value:.1e}" if c["id"] == "pairwise_max_abs_diff" else f"{value:.3f}")
        )
        met = {True: "MET", False: "NOT MET", None: "n/a"}[c["met"]]
        rows.append([c["description"], shown, f"{c['op']} {c['threshold']:g}", met, c["note"]])
    out += _table(["target", "value", "threshold", "status", "note"], rows)
    return "\n".join(out)
