"""What the benchmarks share: percentiles, timing two ways of one thing in turn, and the bare
``jupyter_client`` baselines."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager


def p95(samples: list[float]) -> float:
    """The 95th percentile, nearest rank."""
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


def timed(action: Callable[[], Any]) -> float:
    started = time.perf_counter()
    action()
    return (time.perf_counter() - started) * 1000


def pair(
    first_of: Callable[[], Any], second_of: Callable[[], Any], iterations: int
) -> tuple[list[float], list[float]]:
    """Both, taken in turn (so neither gets the quieter moments), after one call each that
    pays for imports and connections."""
    first_of()
    second_of()
    first: list[float] = []
    second: list[float] = []
    for _ in range(iterations):
        first.append(timed(first_of))
        second.append(timed(second_of))
    return first, second


def _ignore(message: dict[str, Any]) -> None:
    """Output hook for ``execute_interactive``: the baseline must not pay for printing."""


def host_baselines(
    kernel: str, iterations: int, root: Path, specs: KernelSpecManager | None = None
) -> tuple[list[float], list[float]]:
    """Kernel start times and warm ``1+1`` round trips with bare ``jupyter_client``."""
    starts: list[float] = []
    round_trips: list[float] = []
    for i in range(iterations):
        if kernel == "deno":
            km = KernelManager(kernel_name="deno", kernel_spec_manager=specs, transport="tcp")
        else:
            km = KernelManager(kernel_name="python3", transport="ipc", ip=str(root / f"k{i}"))
        started = time.perf_counter()
        km.start_kernel()
        client = km.blocking_client()
        client.start_channels()
        client.wait_for_ready(timeout=60)
        starts.append((time.perf_counter() - started) * 1000)
        try:
            client.execute_interactive("1+1", timeout=30, output_hook=_ignore)  # warm-up
            started = time.perf_counter()
            reply = client.execute_interactive("1+1", timeout=30, output_hook=_ignore)
            round_trips.append((time.perf_counter() - started) * 1000)
            assert reply["content"]["status"] == "ok", reply
        finally:
            client.stop_channels()
            km.shutdown_kernel(now=True)
    return starts, round_trips
