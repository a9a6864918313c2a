"""Compare timer_manager with the usual ways to run many named timers on asyncio, in one process.

Contenders (``_contenders.py``): the library with the Cython table and with the pure-Python
table, a dict of ``call_later`` handles feeding an ``asyncio.Queue`` (on asyncio and on uvloop),
a lazy-deletion ``heapq`` driven by one ``call_at``, and the Rust original's design (a dict scanned
every heartbeat). Workloads (``_workloads.py``), at each size: the storm (every timer due within one
second; CPU per delivered expiry, received one at a time and in batches), churn (set, reset every
timer, cancel half, let the rest fire), lateness during the storm at heartbeat 0 and 10 ms, idle
CPU with every timer pending, and memory per live timer (``_memory.py``, in child processes). Then
the steady workload: timers due one after another at 1k, 10k and 100k expiries/s, heartbeats 0, 1 and
10 ms, received one at a time and in batches, every contender on asyncio's loop and on uvloop; CPU per
delivered event and lateness.

Contenders run in rotating order, round after round, each on a fresh event loop, GC on; every
measurement's events are checked (same names, same order where order is defined) before any of
its numbers is used. Printed: the environment block, markdown tables of medians with same-run
ratios to ``call_later``, and PASS/FAIL per target; written: ``benches/results/compare.json`` and
``compare.png``.

    python benches/compare.py            # 10^4, 10^5, 10^6 timers, and the steady rates: about 20 minutes
    python benches/compare.py --quick    # 10^5 only, one round, 0.5 s idle, no heartbeat-0 lateness, and
                                         # the steady rates for tm-cython and call_later over 0.2 s: < 2 min
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))
if importlib.util.find_spec("timer_manager") is None:  # not installed: use the checkout's
    sys.path.insert(0, str(HERE.parent))

import _contenders  # noqa: E402
import _memory  # noqa: E402
import _report  # noqa: E402
import _workloads  # noqa: E402
from _contenders import CONTENDERS, ContenderSpec, on_loop  # noqa: E402
from _workloads import Data, check, run_on_loop  # noqa: E402

WORKLOADS = ("storm-single", "storm-batch", "churn", "lateness-h0", "lateness-h10", "idle", "memory", "steady")
STEADY_RATES = (1_000.0, 10_000.0, 100_000.0)  # expiries per second
STEADY_HEARTBEATS = (0.0, 0.001, 0.01)
STEADY_QUICK = ("tm-cython", "call_later")  # --quick runs the steady workload for these only
STEADY_PRECISE_HEARTBEATS = (0.0,)  # tm-cython-precise differs from tm-cython only where the slack is used
LATENESS_HEARTBEATS = {"lateness-h0": 0.0, "lateness-h10": 0.01}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="10^5 timers (the targets' size), one round, no heartbeat-0 lateness, a short steady run: < 2 min",
    )
    parser.add_argument("--sizes", type=int, nargs="+", help="numbers of timers (default 10^4 10^5 10^6)")
    parser.add_argument("--rounds", type=int, help="rounds of the storm and churn (default 3)")
    parser.add_argument("--heartbeat", type=float, default=0.01, help="library heartbeat in the CPU workloads")
    parser.add_argument("--idle-seconds", type=float, help="how long idle CPU is measured (default 5)")
    parser.add_argument("--window", type=float, default=_workloads.WINDOW, help="the storm's spread (s)")
    parser.add_argument(
        "--steady-rates", type=float, nargs="+", default=list(STEADY_RATES), help="steady: expiries per second"
    )
    parser.add_argument(
        "--steady-heartbeats", type=float, nargs="+", default=list(STEADY_HEARTBEATS), help="steady: heartbeats (s)"
    )
    parser.add_argument("--steady-window", type=float, help="steady: seconds of expiries per run (default 1)")
    parser.add_argument("--timer-slack", type=float, help="the library's timer_slack (default: the library's own)")
    parser.add_argument("--contenders", nargs="+", help="only these contenders (keys)")
    parser.add_argument("--workloads", nargs="+", choices=WORKLOADS, help="only these workloads")
    parser.add_argument("--out", type=Path, default=HERE / "results", help="where compare.json/.png go")
    parser.add_argument("--no-chart", action="store_true", help="write no PNG (no matplotlib needed)")
    parser.add_argument("--no-json", action="store_true", help="write no JSON")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    args = parser.parse_args(argv)
    if args.sizes is None:
        args.sizes = [10**5] if args.quick else [10**4, 10**5, 10**6]
    if args.rounds is None:
        args.rounds = 1 if args.quick else 3
    if args.idle_seconds is None:
        args.idle_seconds = 0.5 if args.quick else 5.0
    if args.steady_window is None:
        args.steady_window = 0.2 if args.quick else 1.0
    return args


@dataclass(frozen=True)
class SteadyCell:
    """A steady run's conditions besides the contender and its loop (heartbeat None: it has none)."""

    rate: float
    heartbeat: float | None
    style: str


Job = tuple[str, int, int, ContenderSpec, SteadyCell | None]  # (workload, n, round, contender, steady cell)


def plan(args: argparse.Namespace, contenders: list[ContenderSpec]) -> list[Job]:
    """Every measurement, contenders in an order that rotates from one round (and unit) to the next."""
    workloads = args.workloads or [w for w in WORKLOADS if not (args.quick and w == "lateness-h0")]
    jobs: list[Job] = []
    turn = 0
    if "steady" in workloads:
        jobs += steady_plan(args, contenders)
    # Size by size: only one size's names and offsets are alive at a time, so that the harness's
    # own data does not make the garbage collector's full passes longer for the next size.
    for n in args.sizes:
        for workload in WORKLOADS:
            if workload not in workloads or workload == "steady":
                continue
            long_run = workload in ("idle", "memory") or (workload.startswith("lateness") and n >= 10**6)
            rounds = 1 if long_run else args.rounds
            eligible = [spec for spec in contenders if _runs(spec, workload)]
            for round_ in range(rounds):
                shift = turn % max(1, len(eligible))
                turn += 1
                jobs.extend((workload, n, round_, spec, None) for spec in eligible[shift:] + eligible[:shift])
    return jobs


def steady_plan(args: argparse.Namespace, contenders: list[ContenderSpec]) -> list[Job]:
    """The steady runs: for each rate, receive style and loop, a round runs every contender once at each
    heartbeat it takes (one without a heartbeat runs once), in an order that rotates from round to round."""
    base = [spec for spec in contenders if spec.loop == "asyncio"]
    if args.quick and not args.contenders:
        base = [spec for spec in base if spec.key in STEADY_QUICK]
    loops = ["asyncio"] + (["uvloop"] if any(spec.loop == "uvloop" for spec in contenders) else [])
    jobs: list[Job] = []
    turn = 0
    for rate in args.steady_rates:
        n = max(1, round(rate * args.steady_window))
        for loop in loops:
            for style in ("single", "batch"):
                runs: list[tuple[ContenderSpec, SteadyCell]] = []
                for spec in base:
                    variant = on_loop(spec, loop)
                    if not variant.has_heartbeat:
                        runs.append((variant, SteadyCell(rate, None, style)))
                        continue
                    for heartbeat in args.steady_heartbeats:
                        if variant.steady_only and heartbeat not in STEADY_PRECISE_HEARTBEATS:
                            continue
                        if heartbeat > 0 or not variant.needs_heartbeat:
                            runs.append((variant, SteadyCell(rate, heartbeat, style)))
                for round_ in range(args.rounds):
                    shift = turn % max(1, len(runs))
                    turn += 1
                    jobs.extend(("steady", n, round_, spec, cell) for spec, cell in runs[shift:] + runs[:shift])
    return jobs


def _runs(spec: ContenderSpec, workload: str) -> bool:
    if spec.steady_only:
        return workload == "steady"
    if workload == "lateness-h0":
        return not spec.needs_heartbeat
    if workload == "lateness-h10":
        return spec.has_heartbeat
    return True


def measure(job: Job, data: Data, args: argparse.Namespace) -> dict[str, Any]:
    """Run one job; return its record (metrics, and the event check's verdict)."""
    workload, n, _, spec, cell = job
    expected: list[str] | None = data.names
    main: Callable[[], Any]
    if cell is not None:

        def main() -> Any:
            return _workloads.steady(spec, data, cell.rate, cell.heartbeat or 0.0, cell.style)

    elif workload in ("storm-single", "storm-batch"):
        style = workload.split("-")[1]

        def main() -> Any:
            return _workloads.storm(spec, data, args.heartbeat, style)

    elif workload == "churn":
        expected = data.survivors

        def main() -> Any:
            return _workloads.churn(spec, data, args.heartbeat)

    elif workload in LATENESS_HEARTBEATS:
        heartbeat = LATENESS_HEARTBEATS[workload]

        def main() -> Any:
            return _workloads.lateness(spec, data, heartbeat)

    elif workload == "idle":
        expected = None

        def main() -> Any:
            return _workloads.idle(spec, data, args.heartbeat, args.idle_seconds)

    else:  # memory, in a child process; a failure there is reported, not fatal
        try:
            metrics = _memory.measure(spec.key, n, args.heartbeat)
        except Exception as exc:
            record = _record(job, {}, None)
            record["error"] = str(exc)
            return record
        return _record(job, metrics, None)
    gc.collect()
    metrics, delivered = run_on_loop(spec.loop, main)
    verdict = None if expected is None else check(spec, delivered, expected)
    return _record(job, metrics, verdict)


def _record(job: Job, metrics: dict[str, float], verdict: str | None) -> dict[str, Any]:
    workload, n, round_, spec, cell = job
    record = {"workload": workload, "n": n, "round": round_, "contender": spec.key, "metrics": metrics}
    if cell is not None:
        record.update(loop=spec.loop, rate=cell.rate, heartbeat=cell.heartbeat, style=cell.style)
    record["check"] = verdict
    return record


def main(argv: list[str] | None = None) -> int:
    """Run the comparison; return 1 if any contender delivered the wrong events, else 0."""
    args = parse_args(argv)
    _contenders.LIBRARY_OPTIONS.clear()
    if args.timer_slack is not None:
        _contenders.LIBRARY_OPTIONS["timer_slack"] = args.timer_slack
    contenders = [spec for spec in CONTENDERS if spec.available()]
    if args.contenders:
        contenders = [spec for spec in contenders if spec.key in args.contenders]
    missing = [spec.key for spec in CONTENDERS if not spec.available()]

    from timer_manager import CORE

    env = _report.environment("asyncio", CORE, sys.argv[1:] if argv is None else argv)
    jobs = plan(args, contenders)
    progress = _report.Progress(len(jobs), enabled=not args.no_progress)
    datasets: dict[int, Data] = {}
    records: list[dict[str, Any]] = []
    started = time.perf_counter()
    for job in jobs:
        workload, n, round_, spec, cell = job
        if n not in datasets:
            datasets.clear()
            gc.collect()
            datasets[n] = Data(n, window=args.window)
        what = f"{_report._size_label(n)}" if cell is None else f"{cell.rate:g}/s {cell.style} h={cell.heartbeat}"
        progress.step(f"{workload} {what} round {round_ + 1} {spec.key}")
        record = measure(job, datasets[n], args)
        records.append(record)
        if record["check"]:
            sys.stderr.write(f"\nCHECK FAILED: {workload} n={n} {spec.key}: {record['check']}\n")
        if record.get("error"):
            sys.stderr.write(f"\nERROR: {workload} n={n} {spec.key}: {record['error']}\n")
    progress.close()
    elapsed = time.perf_counter() - started

    sizes = list(args.sizes)
    storm_records = [r for r in records if r["workload"] != "steady"]
    steady_records = [r for r in records if r["workload"] == "steady"]
    storm_contenders = [spec for spec in contenders if not spec.steady_only]
    tables = _report.markdown_tables(storm_records, storm_contenders, sizes) if storm_records else ""
    library = any(s.key == "tm-cython" for s in contenders)
    targets = _report.evaluate_targets(storm_records, sizes) if library and storm_records else []
    targets += _report.steady_targets(steady_records) if library and steady_records else []
    print("### Performance\n")
    print(_report.environment_block(env))
    print()
    if storm_records:
        print(
            f"Storm: {_report._size_label(max(sizes))} timers at most, all due within {args.window:g} s, set with "
            f"`try_set_timer` (or the contender's set), received by one consumer task. CPU = `time.process_time()` "
            f"for the whole set-then-deliver cycle, GC on. Library and Rust-crate design: heartbeat "
            f"{args.heartbeat * 1e3:g} ms in the CPU workloads. The library's set call applies the set (nothing is "
            f"queued before it), and asks for one pass for the whole burst. Cells: median of {args.rounds} round(s) "
            f"(idle, memory and 10^6 lateness: 1); in parentheses: contender / `{_report.BASELINE}`, the median of "
            f"same-round ratios. The uvloop and Rust-crate-design rows are checked for the same set of names (their "
            f"order within a tick or a millisecond is not by deadline); every other row for the same names in the "
            f"same order."
        )
    print(f"Run took {elapsed:.0f} s.")
    if missing:
        print(f"Not available here, not run: {', '.join(missing)}.")
    print()
    print(tables)
    if steady_records:
        slack = _report.default_slack() if args.timer_slack is None else args.timer_slack
        print(
            f"Steady: timers due one after another at each rate for {args.steady_window:g} s after a lead time, "
            f"set up front (the set calls are in the CPU figure), received by one consumer that stamps each "
            f"receive with the loop's clock; lateness = stamp - deadline (a batch's events share its stamp). "
            f"Ratios: to `call_later` on the same loop, same round. The library with `timer_slack` "
            f"{slack * 1e3:g} ms. Cells: median of {args.rounds} round(s).\n"
        )
        print(_report.steady_summary(steady_records))
        print(_report.steady_tables(steady_records))
    bad = [r for r in records if r["check"]]
    print(f"Event check: {'every contender delivered the expected events' if not bad else f'{len(bad)} FAILED'}.")
    if targets:
        print()
        print(_report.target_lines(targets, "tm-cython"))
    if not args.no_json:
        args.out.mkdir(parents=True, exist_ok=True)
        payload = {
            "environment": env,
            "arguments": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "contenders": {spec.key: {"label": spec.label, "loop": spec.loop} for spec in contenders},
            "records": records,
            "targets": [{"target": t, "passed": p, "detail": d} for t, p, d in targets],
        }
        (args.out / "compare.json").write_text(json.dumps(payload, indent=1))
    if not args.no_chart:
        subtitle = f"{env['cpu']}, {env['python']}, CORE={env['core']}, {env['date']}: {env['command']}"
        _report.draw_chart(storm_records, storm_contenders, sizes, args.out / "compare.png", subtitle)
    written = [name for name, skip in (("compare.json", args.no_json), ("compare.png", args.no_chart)) if not skip]
    if written:
        print(f"\nWrote {' and '.join(written)} to {args.out}.")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
