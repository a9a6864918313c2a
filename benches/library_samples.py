"""The library's share of an idle-timeout server's CPU, two builds side by side, counted by ``perf`` samples.

The server's CPU per message (``idle_server.py``) moves by a few percent from round to round, while the whole
library is about 2% of what a touch server spends per message: a change to the touch's own work is below what
that ratio can resolve. Sampling the servers counts that work directly. Each round runs ``idle_server.py`` with
``--baseline FOLDER`` (the variant from this checkout and from the other one, side by side, with the re-check
beside them), and ``perf record`` samples both servers of the variant for a few seconds inside the measured
window (``-e cpu-clock``, a software event: no hardware counters needed). The report gives, per build, the
samples taken in the compiled core (the ``_core_c`` extension) per 1,000 of the server's samples, pooled over
the rounds and as the median of the rounds, and the functions that took them.

Needs Linux, ``perf`` on the PATH, permission to sample the processes (``kernel.perf_event_paranoid`` at 2 or
less, or root), and both checkouts' extensions built for this interpreter::

    git -C /path/to/main archive HEAD | tar -x -C /tmp/main-build
    (cd /tmp/main-build && python setup.py -q build_ext --inplace)
    python benches/library_samples.py --baseline /tmp/main-build             # touch, uvloop, 1,000 connections
    python benches/library_samples.py --baseline /tmp/main-build --rounds 3 --variant try_set --loop asyncio
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

HERE = Path(__file__).resolve().parent
IDLE_SERVER = HERE / "idle_server.py"
CORE = "_core_c"  # the compiled core's file name starts with this
FIND_SECONDS = 20.0  # the two servers of the variant must have started by then
SYMBOL_PREFIXES = ("__pyx_f_13timer_manager_7_core_c_", "__pyx_pw_13timer_manager_7_core_c_")


def _servers(variant: str) -> dict[str, int]:
    """The pids of the running idle-server processes of ``variant``: ``{"this": pid, "base": pid}``."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:  # gone meanwhile
            continue
        words = [word.decode(errors="replace") for word in argv]
        if "--serve" in words and "--variant" in words and words[words.index("--variant") + 1] == variant:
            found["base" if "--library" in words else "this"] = int(entry.name)
    return found


class Samples(NamedTuple):
    """One server's samples in one round."""

    total: int
    core: collections.Counter[str]  # the compiled core's samples, by function
    paths: set[str]  # the compiled core's files they were taken in (each build's own)


def _count(data: Path, pids: dict[str, int]) -> dict[str, Samples]:
    """Per build: the server's samples."""
    script = subprocess.run(
        ["perf", "script", "-i", str(data), "-F", "pid,ip,sym,dso"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    build_of = {pid: build for build, pid in pids.items()}
    totals: collections.Counter[str] = collections.Counter()
    functions: dict[str, collections.Counter[str]] = {build: collections.Counter() for build in pids}
    paths: dict[str, set[str]] = {build: set() for build in pids}
    for line in script.splitlines():
        words = line.split()
        if not words or not words[0].isdigit() or int(words[0]) not in build_of:
            continue
        build = build_of[int(words[0])]
        totals[build] += 1
        if CORE in line and len(words) >= 4:
            name = words[2]
            for prefix in SYMBOL_PREFIXES:
                name = name.removeprefix(prefix)
            functions[build][name] += 1
            paths[build].add(words[-1].strip("()"))
    return {build: Samples(totals[build], functions[build], paths[build]) for build in pids}


def _tail(path: str, lines: int = 20) -> str:
    """The last ``lines`` lines of the file at ``path`` (a round's output, in a folder removed at exit)."""
    with open(path) as f:
        return "".join(f.readlines()[-lines:])


def _stop_group(process: subprocess.Popen[str]) -> None:
    """Stop ``process`` and everything it started (its process group), if it still runs."""
    if process.poll() is not None:
        return
    for signal_number, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal_number)
        try:
            process.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def one_round(args: argparse.Namespace, workdir: Path, index: int) -> dict[str, Samples]:
    """Run the servers once, sample the variant's two servers, and count."""
    command = [sys.executable, str(IDLE_SERVER), "--sizes", str(args.connections), "--rounds", "1"]
    command += ["--loops", args.loop, "--window", str(args.window), "--variants", "recheck", args.variant]
    command += ["--baseline", str(args.baseline)]
    data = workdir / f"round{index}.data"
    with open(workdir / f"round{index}.out", "w") as log:
        # A session of its own: if this round fails, its servers and clients go with it (a signal to the group).
        bench = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, text=True, start_new_session=True)
        try:
            found: dict[str, int] = {}
            give_up = time.monotonic() + FIND_SECONDS
            while len(found) < 2:
                if time.monotonic() > give_up or bench.poll() is not None:
                    raise RuntimeError(f"the {args.variant} servers did not start:\n{_tail(log.name)}")
                time.sleep(0.05)
                found = _servers(args.variant)
            time.sleep(args.delay)  # the connections open, then the window starts
            pids = ",".join(str(pid) for pid in found.values())
            record = ["perf", "record", "-q", "-F", str(args.frequency), "-e", "cpu-clock", "-p", pids]
            subprocess.run(
                [*record, "-o", str(data), "--", "sleep", str(args.seconds)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                check=True,
                timeout=args.seconds + 30,
            )
            bench.wait(timeout=args.window + 120)
        finally:
            _stop_group(bench)
    if bench.returncode not in (0, 1):  # 1: a target or a check failed, which this does not judge
        raise RuntimeError(f"idle_server.py exited with {bench.returncode}:\n{_tail(log.name)}")
    return _count(data, found)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", type=Path, required=True, help="another checkout, its extension built in place")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--variant", default="touch", choices=["touch", "try_set", "recheck_sets", "recheck_touch"])
    parser.add_argument("--loop", default="uvloop", choices=["asyncio", "uvloop"])
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--window", type=float, default=12.0, help="the servers' measured window, seconds")
    parser.add_argument("--delay", type=float, default=4.0, help="from the servers' start to sampling, seconds")
    parser.add_argument("--seconds", type=float, default=7.0, help="sampled, seconds (within the window)")
    parser.add_argument("--frequency", type=int, default=2999, help="samples per second")
    args = parser.parse_args(argv)
    if shutil.which("perf") is None or not sys.platform.startswith("linux"):
        print("needs Linux and perf on the PATH", file=sys.stderr)
        return 2
    if args.delay + args.seconds > args.window:
        print("--delay + --seconds must fit in --window", file=sys.stderr)
        return 2
    rounds = []
    with tempfile.TemporaryDirectory(prefix="library-samples-") as folder:
        for index in range(args.rounds):
            rounds.append(one_round(args, Path(folder), index))
    print(
        f"Compiled-core samples per 1,000 of the {args.variant} server's samples: {args.loop}, "
        f"{args.connections:,} connections, {args.rounds} round(s) of {args.seconds:g} s at {args.frequency} Hz; "
        f"this checkout against {args.baseline}\n"
    )
    print("| build | samples | in the core | per 1,000, pooled | per 1,000, median of rounds |")
    print("|---|---:|---:|---:|---:|")
    for build in ("this", "base"):
        total = sum(r[build].total for r in rounds)
        core = sum(sum(r[build].core.values()) for r in rounds)
        per_round = [1000 * sum(r[build].core.values()) / max(1, r[build].total) for r in rounds]
        pooled = 1000 * core / max(1, total)
        print(f"| {build} | {total:,} | {core:,} | {pooled:.2f} | {statistics.median(per_round):.2f} |")
    print("\nBy function (samples, all rounds):")
    for build in ("this", "base"):
        functions: collections.Counter[str] = collections.Counter()
        paths: set[str] = set()
        for r in rounds:
            functions.update(r[build].core)
            paths |= r[build].paths
        listed = ", ".join(f"{name} {count}" for name, count in functions.most_common(8))
        print(f"  {build}: {listed}")
        print(f"    (in {', '.join(sorted(paths)) or 'no file of the core'})")
    print(f"\nRerun: python benches/library_samples.py --baseline {args.baseline} --rounds {args.rounds}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
