"""Timing and memory harness shared by the benchmark suites.

What it does, and why (the machines these run on are often shared and noisy):

* **Time** (:func:`measure`): every function is warmed up, then timed in
  *rounds*; one round runs each function once, back to back, in a rotating
  order, so a burst of load from a neighbour hits every function of the
  round. A sample repeats a fast call ``inner`` times (calibrated in warm-up
  to last at least ``min_sample_s``) and is divided by ``inner``. CUDA is
  synchronised before and after each sample. Garbage collection is off
  while timing. We report the **median** per call.
* **Ratios** (:func:`paired_ratio`): the median of the per-round ratios
  ``a[i] / b[i]``, so a slow round slows both sides of its own ratio.
* **Peak memory** (:func:`peak_memory`): bytes allocated by torch above what
  was live when the call started, at its highest point during the call.
  On CUDA, ``torch.cuda.max_memory_allocated`` after
  ``reset_peak_memory_stats``. On CPU there is no such counter (and
  ``tracemalloc`` does not see torch's allocator, RSS does not drop when
  glibc keeps freed pages), so we run the call once under
  ``torch.profiler`` with ``profile_memory=True`` and replay its allocator
  events (every allocation and free of the CPU allocator, in time order):
  the peak of the running sum is the peak of live torch tensors, the CPU
  twin of ``max_memory_allocated``. Memory held by non-torch code (Python
  objects, the profiler itself) is not counted.
* **Ops** (:func:`count_ops`): the operators one call dispatches that make a
  tensor on the device (views excluded). On a GPU each is a kernel launch,
  and at these shapes most take less time than their launch, so a
  component's time there follows its op count more than its arithmetic.
* **Results** (:func:`write_rows`): one JSON file per suite, mode and device
  kind, rows merged by their ``name`` and the file replaced atomically, under
  ``benchmarks/.results/`` (untracked) by default; ``pytest benchmarks/
  --update-results`` writes the tracked ``benchmarks/results/`` and
  docs/benchmarks.md instead. ``benchmarks/report.py`` renders every file found.

Example:
    >>> cfg = BenchConfig.for_mode("quick", torch.device("cpu"))
    >>> cfg = dataclasses.replace(cfg, min_rounds=3, max_rounds=3, budget_s=0.0, min_sample_s=0.0)
    >>> t = measure({"a": lambda: sum(range(100)), "b": lambda: sum(range(10))}, cfg)
    >>> len(t["a"].samples), paired_ratio(t["a"], t["b"]) > 0
    (3, True)
    >>> Target(3.0).describe(), Target(0.05, higher_is_better=False, unit="%").describe()
    ('>= 3x', '<= 5%')
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import gc
import json
import math
import os
import platform
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from diga.engine.checkpoint import atomic_write_text

__all__ = [
    "DEFAULT_RESULTS_DIR",
    "RESULTS_DIR",
    "RUN_RESULTS_DIR",
    "BenchConfig",
    "Target",
    "Timing",
    "count_ops",
    "device_info",
    "machine_info",
    "measure",
    "paired_ratio",
    "peak_memory",
    "results_path",
    "sync",
    "write_rows",
]

#: The published results (tracked): written only by ``pytest benchmarks/ --update-results``.
DEFAULT_RESULTS_DIR = Path(__file__).resolve().parent / "results"
#: Where a plain ``pytest benchmarks/`` writes (untracked, in .gitignore): running never rewrites tracked files.
RUN_RESULTS_DIR = Path(__file__).resolve().parent / ".results"
# DIGA_BENCH_RESULTS=/some/dir sends results (and the rendered page) elsewhere, for experiments;
# benchmarks/conftest.py points this at DEFAULT_RESULTS_DIR under --update-results.
RESULTS_DIR = Path(os.environ.get("DIGA_BENCH_RESULTS") or RUN_RESULTS_DIR)
MIB = 2**20


# ---------------------------------------------------------------- settings
@dataclasses.dataclass(frozen=True)
class BenchConfig:
    """How hard to measure.

    Attributes:
        mode: ``"quick"`` (small shapes, regression guard) or ``"full"`` (paper's shapes, targets).
        device: where inputs live and the code runs.
        warmup: untimed calls per function before the rounds (the last one calibrates ``inner``).
        min_rounds: rounds always run.
        max_rounds: rounds at most.
        budget_s: after ``min_rounds``, more rounds run while the group's elapsed time is below this.
        min_sample_s: a sample repeats a call until it lasts about this long.
        max_inner: cap on the repetitions in one sample.
    """

    mode: str
    device: torch.device
    warmup: int = 1
    min_rounds: int = 5
    max_rounds: int = 15
    budget_s: float = 6.0
    min_sample_s: float = 0.02
    max_inner: int = 200

    @classmethod
    def for_mode(cls, mode: str, device: torch.device) -> BenchConfig:
        """The settings the suites use for ``mode`` on ``device``."""
        if mode not in ("quick", "full"):
            raise ValueError(f"`mode` must be 'quick' or 'full', got {mode!r}")
        if device.type == "cuda":
            return cls(mode, device, warmup=3, min_rounds=10, max_rounds=50, budget_s=10.0,
                       min_sample_s=0.02, max_inner=1000)
        if mode == "full":
            return cls(mode, device, warmup=1, min_rounds=5, max_rounds=21, budget_s=30.0,
                       min_sample_s=0.05)
        return cls(mode, device)

    @property
    def full(self) -> bool:
        return self.mode == "full"


@dataclasses.dataclass(frozen=True)
class Target:
    """A target for one measured number, and the half-strength guard quick mode asserts.

    ``higher_is_better``: a speed-up (``>= value``); else a cost or memory
    fraction (``<= value``). The guard is half the target for speed-ups and
    twice it for fractions: a regression guard noise cannot trip.
    """

    value: float
    higher_is_better: bool = True
    unit: str = "x"

    @property
    def guard(self) -> float:
        return self.value / 2 if self.higher_is_better else self.value * 2

    def holds(self, measured: float, *, bound: float | None = None) -> bool:
        bound = self.value if bound is None else bound
        return measured >= bound if self.higher_is_better else measured <= bound

    def describe(self, value: float | None = None) -> str:
        value = self.value if value is None else value
        op = ">=" if self.higher_is_better else "<="
        if self.unit == "%":
            return f"{op} {100 * value:g}%"
        return f"{op} {value:g}{self.unit}"


# ---------------------------------------------------------------- timing
@dataclasses.dataclass
class Timing:
    """Per-call seconds of one function, one sample per round."""

    name: str
    samples: list[float]
    inner: int

    @property
    def median_ms(self) -> float:
        return 1e3 * statistics.median(self.samples)

    @property
    def min_ms(self) -> float:
        return 1e3 * min(self.samples)

    @property
    def iqr_ms(self) -> float:
        if len(self.samples) < 2:
            return 0.0
        q = statistics.quantiles(self.samples, n=4)
        return 1e3 * (q[2] - q[0])


def sync(device: torch.device) -> None:
    """Wait for queued kernels (CUDA); nothing to do on the CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _sample(fn: Callable[[], Any], inner: int, device: torch.device) -> float:
    sync(device)
    start = time.perf_counter()
    for _ in range(inner):
        fn()
    sync(device)
    return (time.perf_counter() - start) / inner


def measure(fns: Mapping[str, Callable[[], Any]], cfg: BenchConfig) -> dict[str, Timing]:
    """Time every function of ``fns`` in interleaved rounds (see the module docstring).

    Use ``dataclasses.replace(cfg, ...)`` for a group that needs other round counts.

    Returns:
        ``{name: Timing}`` with one sample (seconds per call) per round.
    """
    names = list(fns)
    inner: dict[str, int] = {}
    for name in names:
        per_call = _sample(fns[name], 1, cfg.device)
        for _ in range(max(cfg.warmup - 1, 0)):
            per_call = _sample(fns[name], 1, cfg.device)
        wanted = cfg.min_sample_s / max(per_call, 1e-9)
        inner[name] = int(min(max(1, math.ceil(wanted)), cfg.max_inner))
    samples: dict[str, list[float]] = {name: [] for name in names}
    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        start = time.perf_counter()
        rounds = 0
        while rounds < cfg.min_rounds or (
            rounds < cfg.max_rounds and time.perf_counter() - start < cfg.budget_s
        ):
            shift = rounds % len(names)
            for name in names[shift:] + names[:shift]:
                samples[name].append(_sample(fns[name], inner[name], cfg.device))
            rounds += 1
    finally:
        if was_enabled:
            gc.enable()
    return {name: Timing(name, samples[name], inner[name]) for name in names}


def paired_ratio(num: Timing, den: Timing) -> float:
    """Median over rounds of ``num[i] / den[i]`` (both measured in the same round)."""
    return statistics.median(a / b for a, b in zip(num.samples, den.samples, strict=True))


# ---------------------------------------------------------------- ops
def count_ops(
    fn: Callable[[], Any], device: torch.device, *, setup: Callable[[], Any] | None = None
) -> int:
    """Operators one call of ``fn`` dispatches that output a tensor on ``device`` (views excluded).

    Counted below autograd (a backward inside ``fn`` counts its ops too), so on a GPU it
    is the number of kernels the call launches, give or take a fused or composite one.
    Host-side work (a CPU generator's draws) does not count on a GPU. An op that returns
    nothing (the in-place ``torch._foreach_*_``) counts by the tensors it was given.

    Example:
        >>> x = torch.ones(4)
        >>> count_ops(lambda: (x + 1).view(2, 2).sum(), torch.device("cpu"))
        2
    """
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_leaves

    class _Count(TorchDispatchMode):
        n = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            made = [t for t in tree_leaves(out) if isinstance(t, torch.Tensor)]
            if not made:  # in-place ops that return nothing (torch._foreach_*_): what they wrote
                made = [t for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
            if not func.is_view and any(t.device.type == device.type for t in made):
                self.n += 1
            return out

    fn()  # warm: lazily built state (caches, kernels) is not counted
    if setup is not None:
        setup()
    with _Count() as counter:
        fn()
    return counter.n


# ---------------------------------------------------------------- memory
def peak_memory(
    fn: Callable[[], Any], device: torch.device, *, setup: Callable[[], Any] | None = None
) -> int:
    """Peak bytes torch allocated during one call of ``fn``, above what was live before it.

    ``setup`` (optional) runs just before the measured call, outside it (e.g. to
    drop a gradient the previous call left). CUDA: ``max_memory_allocated`` after
    ``reset_peak_memory_stats``. CPU: the running sum of the CPU allocator's
    events recorded by ``torch.profiler`` (``profile_memory=True``), at its
    highest. On CPU ``fn`` first runs once unprofiled, so whatever state it
    frees in the measured call was allocated outside any profiled region (the
    profiler reports frees only of blocks it saw allocated).
    """
    if device.type == "cuda":
        if setup is not None:
            setup()
        gc.collect()
        sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        fn()
        sync(device)
        return int(torch.cuda.max_memory_allocated(device) - base)
    from torch.profiler import ProfilerActivity, profile

    fn()
    if setup is not None:
        setup()
    gc.collect()
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    live = peak = 0
    for _, nbytes in sorted(_cpu_memory_events(prof), key=lambda ev: ev[0]):
        live += nbytes
        peak = max(peak, live)
    return int(peak)


def _cpu_memory_events(prof) -> list[tuple[int, int]]:
    """``(time_ns, bytes)`` of every CPU allocation (+) and free (-) the profiler saw."""
    out = []
    for e in prof.profiler.kineto_results.events():
        if e.name() == "[memory]" and str(e.device_type()).endswith("CPU"):
            out.append((e.start_ns(), e.nbytes()))
    return out


# ---------------------------------------------------------------- context
def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _mem_total_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def machine_info() -> dict[str, Any]:
    """CPU model, logical cores (all and usable), torch threads, memory, OS.

    Example:
        >>> sorted(machine_info())[:3]
        ['cores', 'cores_usable', 'cpu']
    """
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        usable = os.cpu_count()
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "cores_usable": usable,
        "torch_threads": torch.get_num_threads(),
        "memory_gib": _mem_total_gib(),
        "load_avg_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
    }


def device_info(device: torch.device) -> str:
    """``"cpu"`` or the CUDA device's name."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return "cpu"


# ---------------------------------------------------------------- results
def results_path(suite: str, mode: str, device: torch.device, results_dir: Path | None = None) -> Path:
    """``<results dir>/<suite>-<mode>-<cpu|cuda>.json`` (the results dir: :data:`RESULTS_DIR` by default).

    Example:
        >>> results_path("components", "quick", torch.device("cpu")).name
        'components-quick-cpu.json'
    """
    return (results_dir or RESULTS_DIR) / f"{suite}-{mode}-{device.type}.json"


def _atomic_write_json(path: Path, payload: Mapping[str, Any]) -> None:
    atomic_write_text(path, json.dumps(payload, indent=2, allow_nan=False, default=_jsonable) + "\n")


def _jsonable(value: Any) -> Any:
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.item()
    if isinstance(value, (torch.device, torch.dtype, Path)):
        return str(value)
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")


def _clean(value: Any) -> Any:
    """NaN / inf become None (JSON has no NaN); floats keep 4 significant digits."""
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        return float(f"{value:.4g}")
    if isinstance(value, Mapping):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def write_rows(
    suite: str,
    rows: Sequence[Mapping[str, Any]],
    *,
    mode: str,
    device: torch.device,
    title: str | None = None,
    description: str | None = None,
    columns: Sequence[Sequence[str]] | None = None,
    notes: Sequence[str] | None = None,
    plot: Mapping[str, Any] | None = None,
    results_dir: Path | None = None,
) -> Path:
    """Merge ``rows`` (by their ``"name"``) into the suite's results file, atomically.

    Schema: ``{"suite", "title", "description", "date", "machine", "torch",
    "device", "device_kind", "mode", "columns", "notes", "plot", "rows"}``;
    ``columns`` is a list of ``[key, header]`` (default: every row key), ``plot``
    an optional bar-chart spec for ``report.py``. A file written for another
    device name is replaced, not merged.

    Example:
        >>> import tempfile
        >>> d = Path(tempfile.mkdtemp())
        >>> p = write_rows("demo", [{"name": "a", "ms": 1.0}], mode="quick",
        ...                device=torch.device("cpu"), results_dir=d)
        >>> p = write_rows("demo", [{"name": "b", "ms": 2.0}], mode="quick",
        ...                device=torch.device("cpu"), results_dir=d)
        >>> [r["name"] for r in json.loads(p.read_text())["rows"]]
        ['a', 'b']
    """
    path = results_path(suite, mode, device, results_dir)
    dev_name = device_info(device)
    old_rows: list[dict[str, Any]] = []
    old: dict[str, Any] = {}
    if path.exists():
        try:
            old = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            old = {}
        if old.get("device") == dev_name and old.get("mode") == mode:
            old_rows = list(old.get("rows", []))
    new = {row["name"]: dict(row) for row in rows}
    merged = [new.pop(r["name"]) if r.get("name") in new else r for r in old_rows]
    merged += list(new.values())
    payload = {
        "suite": suite,
        "title": title or old.get("title") or suite,
        "description": description if description is not None else old.get("description"),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "torch": torch.__version__,
        "device": dev_name,
        "device_kind": device.type,
        "mode": mode,
        "columns": [list(c) for c in columns] if columns is not None else old.get("columns"),
        "notes": list(notes) if notes is not None else old.get("notes", []),
        "plot": dict(plot) if plot is not None else old.get("plot"),
        "rows": _clean(merged),
    }
    _atomic_write_json(path, payload)
    return path
