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


def interleaved_best(fns, repeats: int) -> list[float]:
    """The best wall time in seconds of every callable in `fns` (each must block until its
    work is done), after a warm-up call of each, timing them in turn `repeats` times so that a
    change in the machine's load hits all of them."""
    for fn in fns:
        fn()
    best = [float("inf")] * len(fns)
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            start = time.perf_counter()
            fn()
            best[i] = min(best[i], time.perf_counter() - start)
    return best


def best_of(fn, repeats: int = 5) -> float:
    """The best wall time of `fn()` in seconds (after one warm-up call), blocking on results."""
    return interleaved_best([lambda: jax.block_until_ready(fn())], repeats)[0]
