"""Memory per live timer, for one contender, measured in a child process of its own.

RSS only means something in a fresh process (freed memory is kept by the allocator for the next
contender), so :func:`measure` runs ``python benches/_memory.py KEY N`` and reads one JSON line:
``rss_bytes_per_timer`` (VmRSS growth while ``N`` timers are pending, names built beforehand) and
``traced_bytes_per_timer`` (tracemalloc, in a second pass with a new contender).
"""

from __future__ import annotations

import asyncio
import gc
import importlib.util
import json
import os
import subprocess
import sys
import tracemalloc
from itertools import islice
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))
if importlib.util.find_spec("timer_manager") is None:  # not installed: use the checkout's
    sys.path.insert(0, str(HERE.parent))

__all__ = ("measure",)


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def measure(key: str, n: int, heartbeat: float) -> dict[str, float]:
    """Run the child for contender ``key`` with ``n`` pending timers; return its figures."""
    result = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), key, str(n), repr(heartbeat)],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    if result.returncode != 0:
        raise RuntimeError(f"memory child for {key} failed:\n{result.stderr}")
    figures: dict[str, float] = json.loads(result.stdout.strip().splitlines()[-1])
    return figures


def _child(key: str, n: int, heartbeat: float) -> dict[str, float]:
    from _contenders import CONTENDERS
    from _workloads import Data, run_on_loop

    spec = next(spec for spec in CONTENDERS if spec.key == key)
    data = Data(n)

    async def fill(count: int) -> Any:
        contender = await spec.build(heartbeat, count + 64)
        set_ = contender.set
        for name, offset in islice(zip(data.names, data.far, strict=False), count):
            set_(name, offset)
        await contender.settle()
        await asyncio.sleep(0.01)
        if getattr(contender, "handle", None) is not None:
            assert contender.handle.pending_count() == count
        return contender

    async def main() -> dict[str, float]:
        # Imports, code objects and one-off caches are not per timer; a small warm-up pays them
        # without leaving much freed memory for the measured fill to reuse.
        warm = await fill(min(n, 100))
        await warm.stop()
        del warm
        gc.collect()
        before = _rss()
        contender = await fill(n)
        gc.collect()
        rss = _rss() - before
        await contender.stop()
        del contender
        gc.collect()
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        contender = await fill(n)
        gc.collect()
        traced = tracemalloc.get_traced_memory()[0] - base
        tracemalloc.stop()
        await contender.stop()
        return {"rss_bytes_per_timer": rss / n, "traced_bytes_per_timer": traced / n}

    figures: dict[str, float] = run_on_loop(spec.loop, main)
    return figures


if __name__ == "__main__":
    print(json.dumps(_child(sys.argv[1], int(sys.argv[2]), float(sys.argv[3]))))
