"""Compare timer_manager with the usual ways to run many named timers on asyncio, in one process.

Contenders (``_contenders.py``): the library with the Cython table and with the pure-Python
table, a dict of ``call_later`` handles feeding an ``asyncio.Queue`` (on asyncio and on uvloop),
a lazy-deletion ``heapq`` driven by one ``call_at``, and the Rust original's design (a dict scanned
every heartbeat). Workloads (``_workloads.py``), at each size: the storm (every timer due within one
second; CPU per delivered expiry, received one at a time and in batches), churn (set, reset every
timer, cancel half, let the rest fire), lateness during the storm at heartbeat 0 and 10 ms, idle
CPU with every timer pending, and memory per live timer (``_memory.py``, in child processes).

Contenders run in rotating order, round after round, each on a fresh event loop, GC on; every
measurement's events are checked (same names, same order where order is defined) before any of
its numbers is used. Printed: the environment block, markdown tables of medians with same-run
ratios to ``call_later``, and PASS/FAIL per target; written: ``benches/results/compare.json`` and
``compare.png``.

    python benches/compare.py            # 10^4, 10^5, 10^6 timers: several minutes
    python benches/compare.py --quick    # 10^5 only, one round, 0.5 s idle, no heartbeat-0 lateness: < 1 min
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))
if importlib.util.find_spec("timer_manager") is None:  # not installed: use the checkout's
    sys.path.insert(0, str(HERE.parent))

import _memory  # noqa: E402
import _report  # noqa: E402
import _workloads  # noqa: E402
from _contenders import CONTENDERS, ContenderSpec  # noqa: E402
from _workloads import Data, check, run_on_loop  # noqa: E402

WORKLOADS = ("storm-single", "storm-batch", "churn", "lateness-h0", "lateness-h10", "idle", "memory")
LATENESS_HEARTBEATS = {"lateness-h0": 0.0, "lateness-h10": 0.01}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="10^5 timers (the targets' size), one round, no heartbeat-0 lateness: < 1 min",
    )
    parser.add_argument("--sizes", type=int, nargs="+", help="numbers of timers (default 10^4 10^5 10^6)")
    parser.add_argument("--rounds", type=int, help="rounds of the storm and churn (default 3)")
    parser.add_argument("--heartbeat", type=float, default=0.01, help="library heartbeat in the CPU workloads")
    parser.add_argument("--idle-seconds", type=float, help="how long idle CPU is measured (default 5)")
    parser.add_argument("--window", type=float, default=_workloads.WINDOW, help="the storm's spread (s)")
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
    return args


Job = tuple[str, int, int, ContenderSpec]  # (workload, n, round, contender)


def plan(args: argparse.Namespace, contenders: list[ContenderSpec]) -> list[Job]:
    """Every measurement, contenders in an order that rotates from one round (and unit) to the next."""
    workloads = args.workloads or [w for w in WORKLOADS if not (args.quick and w == "lateness-h0")]
    jobs: list[Job] = []
    turn = 0
    # Size by size: only one size's names and offsets are alive at a time, so that the harness's
    # own data does not make the garbage collector's full passes longer for the next size.
    for n in args.sizes:
        for workload in WORKLOADS:
            if workload not in workloads:
                continue
            long_run = workload in ("idle", "memory") or (workload.startswith("lateness") and n >= 10**6)
            rounds = 1 if long_run else args.rounds
            eligible = [spec for spec in contenders if _runs(spec, workload)]
            for round_ in range(rounds):
                shift = turn % max(1, len(eligible))
                turn += 1
                jobs.extend((workload, n, round_, spec) for spec in eligible[shift:] + eligible[:shift])
    return jobs


def _runs(spec: ContenderSpec, workload: str) -> bool:
    if workload == "lateness-h0":
        return not spec.needs_heartbeat
    if workload == "lateness-h10":
        return spec.has_heartbeat
    return True


def measure(job: Job, data: Data, args: argparse.Namespace) -> dict[str, Any]:
    """Run one job; return its record (metrics, and the event check's verdict)."""
    workload, n, _, spec = job
    expected: list[str] | None = data.names
    main: Callable[[], Any]
    if workload in ("storm-single", "storm-batch"):
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
    workload, n, round_, spec = job
    return {"workload": workload, "n": n, "round": round_, "contender": spec.key, "metrics": metrics, "check": verdict}


def main(argv: list[str] | None = None) -> int:
    """Run the comparison; return 1 if any contender delivered the wrong events, else 0."""
    args = parse_args(argv)
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
        workload, n, round_, spec = job
        if n not in datasets:
            datasets.clear()
            gc.collect()
            datasets[n] = Data(n, window=args.window)
        progress.step(f"{workload} {_report._size_label(n)} round {round_ + 1} {spec.key}")
        record = measure(job, datasets[n], args)
        records.append(record)
        if record["check"]:
            sys.stderr.write(f"\nCHECK FAILED: {workload} n={n} {spec.key}: {record['check']}\n")
        if record.get("error"):
            sys.stderr.write(f"\nERROR: {workload} n={n} {spec.key}: {record['error']}\n")
    progress.close()
    elapsed = time.perf_counter() - started

    sizes = list(args.sizes)
    tables = _report.markdown_tables(records, contenders, sizes)
    targets = _report.evaluate_targets(records, sizes) if any(s.key == "tm-cython" for s in contenders) else []
    print("### Performance\n")
    print(_report.environment_block(env))
    print()
    print(
        f"Storm: {_report._size_label(max(sizes))} timers at most, all due within {args.window:g} s, set with "
        f"`try_set_timer` (or the contender's set), received by one consumer task. CPU = `time.process_time()` "
        f"for the whole set-then-deliver cycle, GC on. Library and Rust-crate design: heartbeat "
        f"{args.heartbeat * 1e3:g} ms in the CPU workloads. The library's set call only queues a command: "
        f"applying it is counted in the per-expiry and churn figures. Cells: median of {args.rounds} round(s) "
        f"(idle, memory and 10^6 lateness: 1); in parentheses: contender / `{_report.BASELINE}`, the median of "
        f"same-round ratios. The uvloop and Rust-crate-design rows are checked for the same set of names (their order "
        f"within a tick or a millisecond is not by deadline); every other row for the same names in the same "
        f"order. Run took {elapsed:.0f} s."
    )
    if missing:
        print(f"Not available here, not run: {', '.join(missing)}.")
    print()
    print(tables)
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
        _report.draw_chart(records, contenders, sizes, args.out / "compare.png", subtitle)
    written = [name for name, skip in (("compare.json", args.no_json), ("compare.png", args.no_chart)) if not skip]
    if written:
        print(f"\nWrote {' and '.join(written)} to {args.out}.")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
