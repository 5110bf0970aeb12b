"""Benchmark options and session fixtures; renders the results page at the end.

``pytest benchmarks/`` runs QUICK mode (small CPU shapes; asserts half-strength
guards). ``pytest benchmarks/ --full`` or ``DIGA_BENCH_FULL=1`` runs the
paper's shapes and asserts the targets. The device is CUDA when available,
unless ``--bench-device cpu`` / ``DIGA_BENCH_DEVICE=cpu``. ``--bench-threads N``
/ ``DIGA_BENCH_THREADS=N`` sets torch's CPU threads; by default QUICK mode on
the CPU uses 1 thread (OpenMP threads on a shared, oversubscribed machine make
timings swing by 10x and more, which a regression guard must not depend on)
and FULL mode uses torch's default.

Results go to ``benchmarks/.results/`` (untracked; the rendered page is
``benchmarks/.results/benchmarks.md``), so running the benchmarks never
rewrites tracked files. ``--update-results`` (or ``DIGA_BENCH_UPDATE=1``) is
the explicit step that writes the published ``benchmarks/results/`` and
re-renders docs/benchmarks.md; ``DIGA_BENCH_RESULTS=DIR`` writes to DIR.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

_HERE = Path(__file__).resolve().parent
if str(_HERE) not in sys.path:  # sibling modules import by name under any import mode
    sys.path.insert(0, str(_HERE))

import _harness  # noqa: E402
from _harness import DEFAULT_RESULTS_DIR, BenchConfig  # noqa: E402

_TRUE = {"1", "true", "yes", "on"}


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("diga-bench", "diga benchmarks")
    group.addoption("--full", action="store_true", default=False,
                    help="run the benchmarks at the paper's shapes and assert the targets "
                    "(also: DIGA_BENCH_FULL=1)")
    group.addoption("--bench-device", default=None, choices=("cpu", "cuda"),
                    help="device to benchmark on (default: cuda when available; also DIGA_BENCH_DEVICE)")
    group.addoption("--bench-threads", type=int, default=None,
                    help="torch CPU threads (default: 1 in quick mode on CPU, else torch's; "
                    "also DIGA_BENCH_THREADS)")
    group.addoption("--update-results", action="store_true", default=False,
                    help="write the published benchmarks/results/ and docs/benchmarks.md (default: the "
                    "untracked benchmarks/.results/; also DIGA_BENCH_UPDATE=1)")


def pytest_configure(config: pytest.Config) -> None:
    """Under ``--update-results``, the suites write the tracked results folder (set before they import it)."""
    if config.getoption("--update-results", default=False) or os.environ.get("DIGA_BENCH_UPDATE", "").lower() in _TRUE:
        _harness.RESULTS_DIR = DEFAULT_RESULTS_DIR


@dataclass(frozen=True)
class Bench:
    """What a benchmark needs to know: mode, device and how hard to measure."""

    cfg: BenchConfig

    @property
    def device(self) -> torch.device:
        return self.cfg.device

    @property
    def mode(self) -> str:
        return self.cfg.mode

    @property
    def full(self) -> bool:
        return self.cfg.full


def _bench_from_config(config: pytest.Config) -> Bench:
    full = config.getoption("--full") or os.environ.get("DIGA_BENCH_FULL", "").lower() in _TRUE
    name = config.getoption("--bench-device") or os.environ.get("DIGA_BENCH_DEVICE") or (
        "cuda" if torch.cuda.is_available() else "cpu"
    )
    if name == "cuda" and not torch.cuda.is_available():
        raise pytest.UsageError("--bench-device cuda asked for, but CUDA is not available")
    threads = config.getoption("--bench-threads") or os.environ.get("DIGA_BENCH_THREADS")
    if not threads and not full and name == "cpu":
        threads = 1
    if threads:
        torch.set_num_threads(int(threads))
    return Bench(BenchConfig.for_mode("full" if full else "quick", torch.device(name)))


@pytest.fixture(scope="session")
def bench(pytestconfig: pytest.Config) -> Bench:
    return _bench_from_config(pytestconfig)


def pytest_report_header(config: pytest.Config) -> str:
    b = _bench_from_config(config)
    return (f"diga benchmarks: mode={b.mode} device={b.device} torch={torch.__version__} "
            f"threads={torch.get_num_threads()}")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Render the page of every results file (cheap, idempotent): docs/benchmarks.md under
    ``--update-results``, else ``benchmarks.md`` beside the results (untracked)."""
    results = _harness.RESULTS_DIR
    if not results.is_dir() or not any(results.glob("*.json")):
        return
    import report

    published = results.resolve() == DEFAULT_RESULTS_DIR.resolve()
    out = report.render(results, report.DEFAULT_OUT if published else results / "benchmarks.md")
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(f"benchmark report written to {out}")
