"""Timing and peak-memory measurement for the benchmark.

- Time: the workloads under comparison run in one process, alternating (the order flips every round),
  after warm-up; each figure is the median over the measured rounds.
- Peak memory, two figures:

  * ``alloc``: peak of the bytes held by PyTorch's allocator during one warmed-up step, above what was
    held when the step started. CUDA: ``torch.cuda.max_memory_allocated``; CPU: the allocation and free
    events of ``torch.profiler`` (``profile_memory=True``), summed in time order.
  * ``rss`` (CPU only): the workload is rebuilt in a fresh Python process
    (``python -m jcas_monai.benchmark.measure SPEC``), runs one warm-up step, returns free heap memory to
    the system (``malloc_trim``), resets the kernel's peak-RSS mark (``/proc/self/clear_refs``) and runs
    one step; the figure is the peak resident set size of that step minus the resident size before it.
    It includes what the allocator does not see (oneDNN buffers, heap fragmentation).
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch

__all__ = ["alloc_peak", "available_memory", "rss_peak", "time_alternating"]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_alternating(
    fns: Mapping[str, Callable[[], Any]], device: torch.device, warmup: int, iterations: int
) -> dict[str, dict[str, Any]]:
    """Wall time of each callable: ``warmup`` untimed rounds, then ``iterations`` timed rounds, alternating.

    Returns:
        per name: ``median_s`` and the list ``times_s``.
    """
    names = list(fns)
    times: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(warmup + iterations):
        for name in names if round_ % 2 == 0 else names[::-1]:
            _sync(device)
            start = time.perf_counter()
            fns[name]()
            _sync(device)
            if round_ >= warmup:
                times[name].append(time.perf_counter() - start)
    return {name: {"median_s": statistics.median(t), "times_s": t} for name, t in times.items()}


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Silence C-level writes to stderr (the profiler backend logs its start and stop there)."""
    sys.stderr.flush()
    saved = os.dup(2)
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def alloc_peak(fn: Callable[[], Any], device: torch.device) -> tuple[int, Any]:
    """Peak allocator bytes of one call of ``fn`` above those held at its start, and what ``fn`` returned.

    Call ``fn`` once before when its first call differs from the next ones (optimiser state, caches).
    """
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        start = torch.cuda.memory_allocated(device)
        result = fn()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - start, result
    from torch.profiler import ProfilerActivity, profile

    with _quiet_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        result = fn()
    events = [
        e
        for e in prof.profiler.kineto_results.events()
        if e.name() == "[memory]" and e.device_type() == torch.autograd.DeviceType.CPU
    ]
    held = peak = 0
    for event in sorted(events, key=lambda e: e.start_ns()):
        held += event.nbytes()
        peak = max(peak, held)
    return peak, result


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def _probe(spec: dict[str, Any]) -> dict[str, int]:
    """Run in the fresh process: build the workload, warm up, then measure one step's peak RSS."""
    from jcas_monai.benchmark.workloads import make_workload

    torch.set_num_threads(spec["threads"])
    step = make_workload(spec)
    step()
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    before = _status_kib("VmRSS")
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")
    step()
    return {"rss_before_bytes": before * 1024, "rss_peak_bytes": (_status_kib("VmHWM") - before) * 1024}


def rss_peak(spec: dict[str, Any], timeout: float = 1800) -> dict[str, Any]:
    """Peak RSS of one step of the workload ``spec`` (see :func:`~jcas_monai.benchmark.workloads.make_workload`;
    ``threads``: torch CPU threads) in a fresh process. Linux only; on failure the result holds ``error`` instead of the figures."""
    cmd = [sys.executable, "-m", "jcas_monai.benchmark.measure", json.dumps(spec)]
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=timeout)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        tail = proc.stderr.strip().splitlines()[-1:] or ["no output"]
        return {"error": f"memory probe failed (exit {proc.returncode}): {tail[0]}"}
    return json.loads(lines[-1])


def available_memory(device: torch.device) -> int:
    """Bytes that can still be allocated on ``device`` (CUDA: free memory; CPU: ``MemAvailable``)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("/proc/meminfo has no MemAvailable")


if __name__ == "__main__":
    print(json.dumps(_probe(json.loads(sys.argv[1]))))
