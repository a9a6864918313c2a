"""The Redis backend's speed, beside arq and BullMQ for Python, in one run on one redis-server.

It starts its own redis-server (loopback, a free port, a temporary folder, ``--save '' --appendonly
no``; ``tests/redis_server.py``) and stops it by pid at the end; each measurement runs in a child
process (``_redis_contenders.py``, whose docstring says what each contender and workload does) after
a ``FLUSHALL``, contenders in an order that rotates from round to round. Printed: the environment, a
table of medians (ratios are medians of same-round ratios), PASS/FAIL per target of issue 13; written:
``benches/results/redis.json`` and ``redis.png``.

Ours runs under this interpreter. arq and BullMQ pin their own redis-py, so each lives in a venv of its
own, run as a child process; a contender whose venv is missing is skipped, with this line:

    python3 -m venv /tmp/venv-arq && /tmp/venv-arq/bin/pip install arq hiredis
    python3 -m venv /tmp/venv-bullmq && /tmp/venv-bullmq/bin/pip install bullmq hiredis

(``--arq-python`` / ``--bullmq-python`` name other interpreters.)

    python benches/redis_bench.py            # 3 rounds, 10^5 timers, 10^6 for memory: about 10 minutes
    python benches/redis_bench.py --quick    # small sizes, one round: seconds
    python benches/redis_bench.py --contenders ours --workloads expiry-rate lateness   # two targets only
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
for folder in (HERE, HERE.parent / "tests"):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

import _report  # noqa: E402
from redis_server import REDIS_SERVER, RedisServer  # noqa: E402

CONTENDERS = ("ours", "arq", "bullmq")
INSTALL = {
    "arq": "python3 -m venv /tmp/venv-arq && /tmp/venv-arq/bin/pip install arq hiredis",
    "bullmq": "python3 -m venv /tmp/venv-bullmq && /tmp/venv-bullmq/bin/pip install bullmq hiredis",
}
WORKLOADS = ("set-receive", "reset", "reset-large", "set-rate", "expiry-rate", "lateness", "memory")
HEARTBEAT = 0.01
Record = dict[str, Any]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes, one round, a few seconds")
    parser.add_argument("--n", type=int, help="timers to set and receive (default 10^5)")
    parser.add_argument("--reset-n", type=int, help="timers reset (default 2000: arq's abort is slow)")
    parser.add_argument("--memory-n", type=int, help="pending timers for the memory figure (default 10^6)")
    parser.add_argument("--rounds", type=int, help="rounds (default 3)")
    parser.add_argument("--window", type=float, default=1.0, help="the delays spread over this many seconds")
    parser.add_argument("--lateness-seconds", type=float, help="steady 10k timers/s for this long (default 5)")
    parser.add_argument("--contenders", nargs="+", choices=CONTENDERS, default=list(CONTENDERS))
    parser.add_argument(
        "--workloads",
        nargs="+",
        choices=WORKLOADS,
        default=list(WORKLOADS),
        help="run only these measurements (e.g. --workloads expiry-rate lateness)",
    )
    parser.add_argument("--arq-python", default=os.environ.get("REDIS_BENCH_ARQ_PYTHON", "/tmp/venv-arq/bin/python"))
    parser.add_argument(
        "--bullmq-python", default=os.environ.get("REDIS_BENCH_BULLMQ_PYTHON", "/tmp/venv-bullmq/bin/python")
    )
    parser.add_argument("--url", help="use this redis-server instead of starting one (it is FLUSHALLed!)")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds one measurement may take")
    parser.add_argument("--out", type=Path, default=HERE / "results", help="where redis.json/.png go")
    parser.add_argument("--no-chart", action="store_true")
    parser.add_argument("--no-json", action="store_true")
    args = parser.parse_args(argv)
    quick = args.quick
    defaults = {
        "n": 5000 if quick else 10**5,
        "reset_n": 300 if quick else 2000,
        "memory_n": 20_000 if quick else 10**6,
        "rounds": 1 if quick else 3,
        "lateness_seconds": 1.0 if quick else 5.0,
    }
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def interpreter(contender: str, args: argparse.Namespace) -> str | None:
    """The Python that runs ``contender``, or None (with the reason printed) when it is not installed."""
    if contender == "ours":
        return sys.executable
    python = args.arq_python if contender == "arq" else args.bullmq_python
    found = os.path.exists(python) and (
        subprocess.run([python, "-c", f"import {contender}"], capture_output=True, check=False).returncode == 0
    )
    if not found:
        print(f"Skipped {contender}: not installed for {python} ({INSTALL[contender]}).")
        return None
    return str(python)


# (workload, who runs it, child arguments): "all" = every contender, in rotating order
def plan(args: argparse.Namespace, contenders: list[str]) -> list[tuple[str, int, str, list[str]]]:
    """Every measurement as (workload, round, contender, child arguments)."""
    jobs: list[tuple[str, int, str, list[str]]] = []
    window = ["--window", str(args.window)]
    for round_ in range(args.rounds):
        shift = round_ % len(contenders)
        order = contenders[shift:] + contenders[:shift]
        jobs += [("set-receive", round_, c, ["--n", str(args.n), *window]) for c in order]
        jobs += [("reset", round_, c, ["--n", str(args.reset_n), *window]) for c in order]
        if "ours" in contenders:
            jobs.append(("reset-large", round_, "ours", ["--n", str(args.n), *window]))
            jobs.append(("set-rate", round_, "ours", ["--n", str(args.n)]))
            lead = str(1.0 + args.n / 20_000)
            jobs.append(("expiry-rate", round_, "ours", ["--n", str(args.n), "--ack", "receive", "--lead", lead]))
            jobs.append(("lateness", round_, "ours", ["--seconds", str(args.lateness_seconds)]))
    if "ours" in contenders:
        jobs.append(("memory", 0, "ours", ["--n", str(args.memory_n)]))
    return [job for job in jobs if job[0] in args.workloads]


def run_child(python: str, contender: str, workload: str, extra: list[str], url: str, timeout: float) -> Record:
    """One measurement in a child process; its metrics and check, or an error."""
    child = "reset" if workload == "reset-large" else workload
    command = [python, str(HERE / "_redis_contenders.py"), contender, child, "--url", url, *extra]
    command += ["--heartbeat", str(HEARTBEAT)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return {"metrics": {}, "check": None, "error": f"took longer than {timeout:g} s"}
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        return {"metrics": {}, "check": None, "error": f"exit {done.returncode}: {' | '.join(tail)}"}
    result: Record = json.loads(lines[-1])
    return result


def flushall(url: str) -> None:
    import redis

    client = redis.Redis.from_url(url)
    try:
        client.flushall()
    finally:
        client.close()


# ---------------------------------------------------------------------- report


def values(records: list[Record], workload: str, contender: str, metric: str) -> list[float]:
    return [
        r["metrics"][metric]
        for r in records
        if r["workload"] == workload and r["contender"] == contender and not r["check"] and metric in r["metrics"]
    ]


def median(records: list[Record], workload: str, contender: str, metric: str) -> float | None:
    found = values(records, workload, contender, metric)
    return statistics.median(found) if found else None


def ratio(records: list[Record], workload: str, metric: str, theirs: str, ours: str = "ours") -> float | None:
    """The median over rounds of theirs / ours, each pair from the same round (how many times faster)."""
    by_round: dict[int, dict[str, float]] = {}
    for r in records:
        if r["workload"] == workload and not r["check"] and metric in r["metrics"]:
            by_round.setdefault(r["round"], {})[r["contender"]] = r["metrics"][metric]
    pairs = [row[theirs] / row[ours] for row in by_round.values() if theirs in row and row.get(ours)]
    return statistics.median(pairs) if pairs else None


def fmt(value: float | None, digits: int = 3) -> str:
    if value is None:
        return "—"
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.{digits}g}"


def per_op_us(records: list[Record], workload: str, contender: str, metric: str, n: int) -> float | None:
    value = median(records, workload, contender, metric)
    return None if value is None else value / n * 1e6


def comparison_table(records: list[Record], contenders: list[str], args: argparse.Namespace) -> str:
    n, rn = args.n, args.reset_n
    size = _report._size_label(n)
    lines = [
        f"| contender | set {size} (s) | set + receive {size} (s) | vs ours | CPU client + server per timer (µs)"
        f" | reset (µs each, {rn} timers) | vs ours | CPU per reset (µs) | lateness p50 / p99 (ms) | bytes per"
        " pending timer |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c in contenders:
        total = median(records, "set-receive", c, "total_s")
        cpu_parts = [median(records, "set-receive", c, m) for m in ("total_client_cpu_s", "total_server_cpu_s")]
        cpu_us = sum(p for p in cpu_parts if p is not None) / n * 1e6 if all(p is not None for p in cpu_parts) else None
        reset_us = per_op_us(records, "reset", c, "reset_s", rn)
        reset_parts = [median(records, "reset", c, m) for m in ("reset_client_cpu_s", "reset_server_cpu_s")]
        reset_cpu = (
            sum(p for p in reset_parts if p is not None) / rn * 1e6 if all(p is not None for p in reset_parts) else None
        )
        versus = "1" if c == "ours" else fmt(ratio(records, "set-receive", "total_s", c))
        versus_reset = "1" if c == "ours" else fmt(ratio(records, "reset", "reset_s", c))
        p50, p99 = (median(records, "set-receive", c, m) for m in ("p50_ms", "p99_ms"))
        failed = [r for r in records if r["contender"] == c and (r["check"] or r.get("error"))]
        name = c + (" (CHECK FAILED or error: see below)" if failed else "")
        lines.append(
            f"| {name} | {fmt(median(records, 'set-receive', c, 'set_s'))} | {fmt(total)} | {versus}x"
            f" | {fmt(cpu_us)} | {fmt(reset_us)} | {versus_reset}x | {fmt(reset_cpu)} | {fmt(p50)} / {fmt(p99)}"
            f" | {fmt(median(records, 'reset', c, 'bytes_per_timer'))} |"
        )
    return "\n".join(lines)


def targets(records: list[Record], args: argparse.Namespace) -> list[tuple[str, bool | None, str]]:
    """Issue 13's speed targets: (what, passed, the measured figure)."""
    out: list[tuple[str, bool | None, str]] = []

    def at_least(label: str, value: float | None, bound: float, unit: str) -> None:
        out.append((label, None if value is None else value >= bound, f"{fmt(value)} {unit}, need >= {bound:g}"))

    def at_most(label: str, value: float | None, bound: float, unit: str) -> None:
        out.append((label, None if value is None else value <= bound, f"{fmt(value)} {unit}, need <= {bound:g}"))

    at_least("try_set_timer sustained, pipelined", median(records, "set-rate", "ours", "sets_per_s"), 50_000, "/s")
    at_least(
        "expiries promoted, delivered, acknowledged (recv_events)",
        median(records, "expiry-rate", "ours", "expiries_per_s"),
        100_000,
        "/s",
    )
    at_most(
        "lateness p99 at 10k timers/s steady, heartbeat 10 ms",
        median(records, "lateness", "ours", "p99_ms"),
        HEARTBEAT * 1e3 + 5,
        "ms",
    )
    memory = median(records, "memory", "ours", "bytes_per_timer")
    at_most(f"Redis memory per pending timer at {_report._size_label(args.memory_n)}", memory, 250, "bytes")
    for theirs, bound in (("arq", 10.0), ("bullmq", 3.0)):
        at_least(f"set + receive {args.n} vs {theirs}", ratio(records, "set-receive", "total_s", theirs), bound, "x")
        at_least(f"reset vs {theirs}", ratio(records, "reset", "reset_s", theirs), bound, "x")
    return out


def ours_table(records: list[Record], args: argparse.Namespace) -> str:
    def m(workload: str, metric: str) -> float | None:
        return median(records, workload, "ours", metric)

    rows = [
        ("`try_set_timer`, new names due in an hour, until `flush()`", fmt(m("set-rate", "sets_per_s")), "sets/s"),
        (
            f"{_report._size_label(args.n)} timers due within 0.1 s: promoted, read, received, acknowledged",
            fmt(m("expiry-rate", "expiries_per_s")),
            "expiries/s",
        ),
        (
            "the same: lateness p50 / p99",
            f"{fmt(m('expiry-rate', 'p50_ms'))} / {fmt(m('expiry-rate', 'p99_ms'))}",
            "ms",
        ),
        (
            f"10k timers/s steady for {args.lateness_seconds:g} s, heartbeat 10 ms: lateness p50 / p99 / max",
            f"{fmt(m('lateness', 'p50_ms'))} / {fmt(m('lateness', 'p99_ms'))} / {fmt(m('lateness', 'max_ms'))}",
            "ms",
        ),
        (
            f"reset of {_report._size_label(args.n)} pending timers (`try_set_timer` again), until applied",
            fmt(per_op_us(records, "reset-large", "ours", "reset_s", args.n)),
            "µs each",
        ),
        (
            f"Redis `used_memory` per pending timer at {_report._size_label(args.memory_n)}",
            fmt(m("memory", "bytes_per_timer")),
            "bytes",
        ),
        (
            f"`try_set_timer` at {_report._size_label(args.memory_n)} pending (the memory run)",
            fmt(m("memory", "sets_per_s")),
            "sets/s",
        ),
    ]
    lines = ["| ours, one manager process | median | unit |", "|---|---:|---|"]
    lines += [f"| {what} | {value} | {unit} |" for what, value, unit in rows]
    return "\n".join(lines)


def draw_chart(records: list[Record], contenders: list[str], args: argparse.Namespace, path: Path) -> None:
    """Two bar panels (log scale): set + receive time, and wall time per reset."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [
        ("set-receive", "total_s", 1.0, f"Set {_report._size_label(args.n)} named timers and receive them all (s)"),
        ("reset", "reset_s", 1e6 / args.reset_n, f"One reset, wall time (µs; {args.reset_n} resets)"),
    ]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    colours = {"ours": "#2a7", "arq": "#d63", "bullmq": "#36c"}
    for ax, (workload, metric, scale, title) in zip(axes, panels, strict=True):
        shown = [(c, median(records, workload, c, metric)) for c in contenders]
        shown = [(c, v * scale) for c, v in shown if v is not None]
        bars = ax.bar([c for c, _ in shown], [v for _, v in shown], color=[colours[c] for c, _ in shown])
        for bar, (_, v) in zip(bars, shown, strict=True):
            ax.annotate(fmt(v), (bar.get_x() + bar.get_width() / 2, v), ha="center", va="bottom", fontsize=9)
        ax.set_yscale("log")
        ax.set_title(title, fontsize=10)
        ax.grid(True, axis="y", which="both", alpha=0.3)
    fig.suptitle(
        f"timer_manager on Redis vs arq and BullMQ, same redis-server, loopback; median of {args.rounds} round(s)",
        fontsize=10,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    """Run every measurement; return 1 if a contender delivered wrong events or failed, else 0."""
    args = parse_args(argv)
    pythons = {c: interpreter(c, args) for c in args.contenders}
    contenders = [c for c in args.contenders if pythons[c] is not None]
    if not contenders:
        print("Nothing to run.")
        return 1
    server: RedisServer | None = None
    folder: tempfile.TemporaryDirectory[str] | None = None
    if args.url is None:
        if REDIS_SERVER is None:
            print("redis-server is not on PATH: apt-get install redis-server (Debian), brew install redis (macOS)")
            return 1
        folder = tempfile.TemporaryDirectory(prefix="redis-bench-")
        server = RedisServer(Path(folder.name))
        url = server.url
    else:
        url = args.url
    from timer_manager import CORE

    env = _report.environment("asyncio", CORE, sys.argv[1:] if argv is None else argv)
    env["command"] = env["command"].replace("benches/compare.py", "benches/redis_bench.py")
    records: list[Record] = []
    started = time.perf_counter()
    try:
        info = _server_version(url)
        jobs = plan(args, contenders)
        for index, (workload, round_, contender, extra) in enumerate(jobs):
            sys.stderr.write(f"[{index + 1}/{len(jobs)}] round {round_ + 1} {workload} {contender}\n")
            flushall(url)
            python = pythons[contender]
            assert python is not None
            result = run_child(python, contender, workload, extra, url, args.timeout)
            record = {"workload": workload, "round": round_, "contender": contender, **result}
            records.append(record)
            if record["check"] or record.get("error"):
                sys.stderr.write(f"  FAILED: {record['check'] or record['error']}\n")
    finally:
        if server is not None:
            server.stop()
        if folder is not None:
            folder.cleanup()
    elapsed = time.perf_counter() - started

    print("### The Redis backend\n")
    print(_report.environment_block(env))
    print(f"- Server: {info}, loopback, `--save '' --appendonly no`, started by the benchmark")
    print()
    print(
        f"Set + receive: {args.n} named timers with delays spread evenly over {args.window:g} s, set as fast as "
        f"each contender's API allows, received by a consumer in the same process; reset: {args.reset_n} pending "
        f"timers due in 60 s, each reset to a delay spread over {args.window:g} s (time until every reset is "
        f"applied). CPU = the client process's user + system time plus redis-server's (`INFO cpu`). Lateness = "
        f"receipt - deadline. Bytes = `used_memory` growth per pending timer (reset workload, before the reset). "
        f"Medians of {args.rounds} round(s), contenders in rotating order; 'vs ours' = the median of same-round "
        f"ratios (theirs / ours). Run took {elapsed:.0f} s."
    )
    print()
    print(comparison_table(records, contenders, args))
    if "ours" in contenders:
        print()
        print(ours_table(records, args))
    bad = [r for r in records if r["check"] or r.get("error")]
    print()
    print("Event check: " + ("every contender delivered the expected events." if not bad else f"{len(bad)} FAILED:"))
    for r in bad:
        print(f"  round {r['round'] + 1} {r['workload']} {r['contender']}: {r['check'] or r['error']}")
    if "ours" in contenders:
        print()
        print("Targets (issue 13):")
        for label, passed, detail in targets(records, args):
            verdict = "PASS" if passed else ("FAIL" if passed is False else "N/A ")
            print(f"  {verdict}  {label}: {detail}")
    written = []
    if not args.no_json:
        args.out.mkdir(parents=True, exist_ok=True)
        payload = {
            "environment": {**env, "server": info},
            "arguments": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "records": records,
            "targets": [{"target": t, "passed": p, "detail": d} for t, p, d in targets(records, args)],
        }
        (args.out / "redis.json").write_text(json.dumps(payload, indent=1))
        written.append("redis.json")
    if not args.no_chart:
        draw_chart(records, contenders, args, args.out / "redis.png")
        written.append("redis.png")
    if written:
        print(f"\nWrote {' and '.join(written)} to {args.out}.")
    return 1 if bad else 0


def _server_version(url: str) -> str:
    import redis

    client = redis.Redis.from_url(url)
    try:
        info = client.info("server")
    finally:
        client.close()
    return f"redis-server {info['redis_version']}"


if __name__ == "__main__":
    sys.exit(main())
