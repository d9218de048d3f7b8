"""Shared by the benchmarks: machine description and appending results to RESULTS.md."""

import datetime
import os
import pathlib
import platform
import time

import jax

RESULTS = pathlib.Path(__file__).with_name("RESULTS.md")


def machine() -> str:
    """One line naming the device, the CPU and the library versions."""
    device = jax.devices()[0]
    cpus = os.cpu_count()
    return (
        f"{device.platform.upper()} ({device.device_kind}), {cpus} CPU cores, "
        f"{platform.processor() or platform.machine()}, jax {jax.__version__}, "
        f"{datetime.date.today().isoformat()}"
    )


def append(title: str, command: str, table: str) -> None:
    """Append a section with the machine line and the command that produced it."""
    section = f"\n## {title}\n\n{machine()}  \n`{command}`\n\n{table}\n"
    with RESULTS.open("a") as f:
        f.write(section)


def best_of(fn, repeats: int = 5) -> float:
    """The best wall time of `fn()` in seconds (after one warm-up call), blocking on results."""
    jax.block_until_ready(fn())
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return min(times)
