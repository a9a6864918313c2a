"""Smoke run of ``compare.py`` in the normal test run, so that the comparison cannot rot.

Every workload runs for every contender at a tiny size (10^3 timers, a 50 ms storm, 0.1 s idle; the
steady workload at 2k/s for 50 ms, heartbeats 0 and 1 ms, on both loops), without the chart; the only
assertion is that every contender delivered the expected events. Nothing here asserts speed.
"""

from __future__ import annotations

import json
from pathlib import Path

import compare


def test_every_contender_delivers_the_expected_events(tmp_path: Path, capsys: object) -> None:
    argv = ["--sizes", "1000", "--rounds", "1", "--window", "0.05", "--idle-seconds", "0.1"]
    argv += ["--steady-rates", "2000", "--steady-window", "0.05", "--steady-heartbeats", "0", "0.001"]
    argv += ["--no-chart", "--no-progress", "--out", str(tmp_path)]
    status = compare.main(argv)
    results = json.loads((tmp_path / "compare.json").read_text())
    failed = [r for r in results["records"] if r["check"]]
    assert not failed, failed
    assert status == 0
    measured = {(r["workload"], r["contender"]) for r in results["records"] if r["metrics"]}
    for workload in ("storm-single", "storm-batch", "churn", "lateness-h0"):
        assert {c for w, c in measured if w == workload} >= {"tm-python", "call_later", "heapq"}, workload
    assert {c for w, c in measured if w == "lateness-h10"} >= {"tm-python", "rust-scan"}
    steady = {(r["contender"], r["loop"], r["style"]) for r in results["records"] if r["workload"] == "steady"}
    for loop, suffix in (("asyncio", ""), ("uvloop", "-uvloop")):
        for style in ("single", "batch"):
            for contender in ("tm-cython", "tm-cython-precise", "tm-python", "call_later", "heapq", "rust-scan"):
                assert (contender + suffix, loop, style) in steady, (contender, loop, style)
