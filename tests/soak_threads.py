"""The threaded soak: one manager driven from threads and tasks for minutes, checked as it goes.

Four threads (``threadsafe()``, blocking and ``try_``, single and batched, with timeouts) and three loop
tasks (awaitable and ``try_``, some cancelled by a tiny timeout) set, cancel and touch at random, with
``sys.setswitchinterval(1e-5)``, on a command queue of 4 and an event queue of 8, while a consumer
receives every event. Timers are due within 50 ms, so the table stays small and memory should stay flat.
Every second the loop matches what the engine applied (a recording table's log) against each caller's
calls that returned normally, in order, and drops what matched, so the bookkeeping stays small too.
At the end a shutdown must apply everything still accepted.

It reports, as JSON: the calls accepted and refused, the commands applied, the events received,
mismatches (must be 0), whether anything hung, the library's log records by level, and RSS at each
checkpoint (flat: the last is within 16 MiB of the one at a tenth of the run).

Run it on its own: ``python tests/soak_threads.py [--seconds 600] [--table c|py]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
from collections import deque
from typing import Any, cast

from stress import Caller, Crowd, RecordingTable, consume, record_refused_rearms, recording_table, same_calls
from support import use_core

from timer_manager import TimerManager, _backend

HANG = 120.0


def rss_bytes() -> int:
    """The current resident set size (Linux /proc)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096


class Matcher:
    """Matches applied commands against each caller's accepted calls, as both arrive."""

    def __init__(self, callers: list[Caller]) -> None:
        self.callers = {caller.key: caller for caller in callers}
        self.applied: dict[str, deque[tuple[str, str]]] = {caller.key: deque() for caller in callers}
        self.matched = 0
        self.touches_matched = 0
        self.mismatches: list[str] = []

    def feed(self, log: list[tuple[str, str, bool]]) -> None:
        for op, name, _ in log:
            if op != "clear":
                self.applied[name.split(":")[0]].append((op, name))
        for key, applied in self.applied.items():
            accepted = self.callers[key].accepted
            while applied and accepted:
                got, expected = applied.popleft(), accepted.popleft()
                if not same_calls([got], [expected]):
                    self.mismatches.append(f"{key}: applied {got}, expected {expected}")
                self.matched += 1
                self.touches_matched += expected[0] == "touch"

    def unmatched(self) -> dict[str, int]:
        return {
            key: len(self.applied[key]) + len(self.callers[key].accepted)
            for key in self.callers
            if self.applied[key] or self.callers[key].accepted
        }


async def _soak(seconds: float, table_class: Any) -> dict[str, Any]:
    recording = recording_table(table_class)
    _backend.TimerTable = recording  # type: ignore[attr-defined]  # managers created from now on record
    manager, handle = TimerManager.new("soak-threads", 0.0, 4, 8, max_timers=500)
    table = cast(RecordingTable, manager._runner.table)
    record_refused_rearms(manager._runner.engine, table)
    run = asyncio.ensure_future(manager.run())
    seen: list[str] = []
    consumer = asyncio.ensure_future(consume(handle, seen))
    crowd = Crowd(handle, 0, durations=(0.0, 0.001, 0.01, 0.05), touches=True)
    matcher = Matcher(crowd.callers)
    events = 0
    checkpoints: list[tuple[float, int]] = []
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        await asyncio.sleep(1.0)
        log, table.log = table.log, []
        matcher.feed(log)
        events += len(seen)
        seen.clear()
        checkpoints.append((round(time.monotonic() - started, 1), rss_bytes()))
    await asyncio.wait_for(handle.shutdown(), HANG)
    hung = await crowd.stop(HANG)
    try:
        await asyncio.wait_for(asyncio.gather(run, consumer), HANG)
    except asyncio.TimeoutError:
        hung.append("run() or the consumer")
    matcher.feed(table.log)
    events += len(seen)
    callers = crowd.callers
    early = checkpoints[len(checkpoints) // 10][1] if checkpoints else 0
    late = checkpoints[-1][1] if checkpoints else 0
    return {
        "table": table.__class__.__mro__[1].__module__,
        "seconds": round(time.monotonic() - started, 1),
        "switch_interval": sys.getswitchinterval(),
        "refused": sum(caller.refused for caller in callers),
        "applied_and_matched": matcher.matched,
        "touches_matched": matcher.touches_matched,
        "events_received": events,
        "mismatches": len(matcher.mismatches),
        "first_mismatches": matcher.mismatches[:5],
        "unmatched_at_end": matcher.unmatched(),
        "errors": [repr(error) for error in crowd.errors],
        "hung": hung,
        "reserved_at_end": len(manager._runner.admission.reserved) if manager._runner.admission else 0,
        "rss_mib_at_a_tenth": round(early / 2**20, 1),
        "rss_mib_at_end": round(late / 2**20, 1),
        "rss_flat": late - early <= 16 * 2**20,
        "rss_checkpoints_mib": [round(rss / 2**20, 1) for _, rss in checkpoints[:: max(1, len(checkpoints) // 20)]],
    }


class LogCounter(logging.Handler):
    """Counts the records it is given, by level name."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: dict[str, int] = {}

    def emit(self, record: logging.LogRecord) -> None:
        self.counts[record.levelname] = self.counts.get(record.levelname, 0) + 1


def run_thread_soak(seconds: float, table_class: Any) -> dict[str, Any]:
    """Run the threaded soak for ``seconds`` on a recording subclass of ``table_class`` and return its report.

    The library's log records (a warning each time the small event queue fills) are counted here and go no
    further: pytest keeps every record a test logs, which over ten minutes grew the process by about 5 MiB a
    minute and failed the flat-memory check of a soak whose own memory was flat."""
    old = sys.getswitchinterval()
    library_log = logging.getLogger("timer_manager")
    counter = LogCounter()
    propagate = library_log.propagate
    library_log.addHandler(counter)
    library_log.propagate = False
    sys.setswitchinterval(1e-5)
    try:
        report = asyncio.run(_soak(seconds, table_class))
    finally:
        sys.setswitchinterval(old)
        library_log.propagate = propagate
        library_log.removeHandler(counter)
    report["log_records"] = counter.counts
    return report


def passed(report: dict[str, Any]) -> bool:
    """Whether a report shows nothing lost, nothing duplicated, nothing hung and flat memory."""
    return (
        report["mismatches"] == 0
        and not report["unmatched_at_end"]
        and not report["errors"]
        and not report["hung"]
        and report["reserved_at_end"] == 0
        and report["rss_flat"]
        and report["applied_and_matched"] > 0
        and report["touches_matched"] > 0
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=600.0)
    parser.add_argument("--table", choices=("c", "py"), default="c")
    args = parser.parse_args()
    logging.getLogger("timer_manager").setLevel(logging.ERROR)  # the full event queue's WARNING, often
    core = use_core(args.table)  # the table (subclassed to record) and its engine
    report = run_thread_soak(args.seconds, core.TimerTable)
    print(json.dumps(report, indent=2))
    sys.exit(0 if passed(report) else 1)


if __name__ == "__main__":
    main()
