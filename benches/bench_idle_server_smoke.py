"""Smoke runs of ``idle_server.py``, ``touch_ratios.py`` and ``touch_call.py`` in the normal test run, so that they
cannot rot.

The idle server runs every variant on every loop at a tiny size (100 connections, 1 s idle, a 1.5 s
window; the five servers of a loop side by side, about 5 s in all); the assertions are on behaviour only
(every idle connection closed after the server read its last message, none early on the stock loop, no
active one closed), never on speed or on how late a closing was. An active connection sends every 50 ms,
so a server closes it only if the client (or the server, on uvloop, whose timers run before the reads)
stalls for nearly the whole idle time: with
0.3 s idle, a run beside two busy processes saw 14 active connections of the naive variant (plain
call_later) closed. The touch ratios run at 2,000 timers, one round, and the touch call at 200 timers,
one round; only that they run and print is checked.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import idle_server
import pytest
import touch_call
import touch_ratios

from timer_manager import _env


@pytest.mark.skipif(
    _env.no_extensions(),
    reason=f"{_env.NO_EXTENSIONS_VARIABLE} is set: the idle-server benchmark's servers measure the compiled core only",
)
def test_every_variant_closes_the_idle_connections_and_only_those(tmp_path: Path) -> None:
    out = tmp_path / "idle.json"
    argv = ["--sizes", "100", "--rounds", "1", "--idle", "1.0", "--window", "1.5", "--rate", "2000"]
    idle_server.main([*argv, "--json", str(out)])
    records = json.loads(out.read_text())["records"]
    cells = {(r["variant"], r["loop"]) for r in records}
    loops = {r["loop"] for r in records}
    assert cells == {(v, loop) for v in (*idle_server.VARIANTS, idle_server.FLOOR) for loop in loops}
    for r in records:
        assert r["messages_per_second"] > 0, r
        # What the connections added (a few KB each), not the library's import (3 MB: 30 KB a connection here).
        assert r["rss_per_connection"] < 20_000, r
        if r["variant"] == idle_server.FLOOR:
            continue
        assert r["closed_active"] == 0, r
        assert r["quiet_left_open"] == 0, r
        if r["loop"] == "asyncio":  # uvloop's time() is read once per loop iteration: its timers can end early
            assert r["early"] == r["early_seen"] == 0, r
        assert r["closed"] == r["quiet"] == 20, r
        # The server read each quiet connection's marked last message before closing it, and timed every closing.
        assert r["closed_before_last_message"] == 0, r
        assert r["closings_timed"] == 20, r


@pytest.mark.skipif(
    _env.no_extensions(),
    reason=f"{_env.NO_EXTENSIONS_VARIABLE} is set: the idle-server benchmark's servers measure the compiled core only",
)
def test_a_baseline_checkouts_library_runs_beside_this_ones(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--baseline``: each library variant also runs from the other checkout, side by side, and is compared.
    Catches: a baseline server that imports this checkout's library (the comparison would be of one build with
    itself), or one whose closings are not checked."""
    here = Path(idle_server.__file__).resolve().parent.parent
    baseline = tmp_path / "baseline"
    shutil.copytree(here / "timer_manager", baseline / "timer_manager", ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path / "idle.json"
    argv = ["--sizes", "100", "--rounds", "1", "--idle", "1.0", "--window", "1.5", "--rate", "2000"]
    argv += ["--loops", "asyncio", "--variants", "recheck", "touch", "--baseline", str(baseline)]
    idle_server.main([*argv, "--json", str(out)])
    records = {r["variant"]: r for r in json.loads(out.read_text())["records"]}
    assert set(records) == {"recheck", "touch", "touch@base", idle_server.FLOOR}
    assert Path(records["touch@base"]["library"]) == baseline / "timer_manager"
    assert Path(records["touch"]["library"]) == here / "timer_manager"
    for variant in ("touch", "touch@base"):
        assert records[variant]["closed_active"] == records[variant]["quiet_left_open"] == 0
        assert records[variant]["closed"] == records[variant]["quiet"] == 20
    assert "touch / touch@base @ asyncio, 100 connections:" in capsys.readouterr().out


@pytest.mark.skipif(
    _env.no_extensions(),
    reason=f"{_env.NO_EXTENSIONS_VARIABLE} is set: the idle-server benchmark's servers measure the compiled core only",
)
def test_the_diagnostic_variants_close_like_the_recheck_and_only_one_of_them_touches(tmp_path: Path) -> None:
    """Catches: a diagnostic variant that closes nothing or closes active connections (its ratio to the re-check
    would not be the re-check plus one part of the touch), or whose touches miss its timers (recheck_touch would
    then time a lookup that finds nothing)."""
    out = tmp_path / "diagnosed.json"
    argv = ["--sizes", "100", "--rounds", "1", "--idle", "1.0", "--window", "1.5", "--rate", "2000", "--loops"]
    argv += ["asyncio", "--variants", "recheck", *idle_server.DIAGNOSTIC, "--json", str(out)]
    idle_server.main(argv)
    records = {r["variant"]: r for r in json.loads(out.read_text())["records"]}
    assert set(records) == {"recheck", *idle_server.DIAGNOSTIC, idle_server.FLOOR}
    for variant in ("recheck", *idle_server.DIAGNOSTIC):
        r = records[variant]
        assert r["closed_active"] == r["quiet_left_open"] == r["early"] == 0, r
        assert r["closed"] == r["quiet"] == r["closings_timed"] == 20, r
        assert r["open_at_end"] >= 80, r
    # Each active connection's timer was due PARKED idle timeouts after a touch near the window's end.
    assert records["recheck_touch"]["touched_lately"] == 80
    assert records["recheck_sets"]["touched_lately"] == 0  # set at the start, never touched
    assert records["recheck"]["touched_lately"] == 0  # no timer at all


def test_a_ratios_interval_holds_its_median_and_is_the_same_each_time() -> None:
    assert idle_server._spread([1.0, 1.0, 1.0]) == "1.000 (95% interval 1.000 to 1.000; 3 rounds, 1.00 to 1.00)"
    values = [0.91, 1.02, 0.97, 1.05, 0.95, 0.99, 1.01]
    printed = idle_server._spread(values)
    assert printed == idle_server._spread(values)
    low, high = (float(word) for word in printed.split("interval ")[1].split(";")[0].split(" to "))
    assert min(values) <= low <= 0.99 <= high <= max(values)
    assert low < high


def test_a_verdict_whose_interval_holds_the_target_is_called_undecided() -> None:
    """Catches: a PASS or FAIL printed as settled when another run of as many rounds could well give the other."""
    spread_out = [0.96, 1.03, 0.98, 1.02, 0.99, 1.01, 0.97]  # median 0.99, interval about 0.97 to 1.02
    assert idle_server._undecided(idle_server._interval(spread_out), 1.0)
    assert not idle_server._undecided(
        idle_server._interval([0.90, 0.91, 0.92, 0.93, 0.94]), 1.0
    )  # every resampled median below
    assert not idle_server._undecided(
        idle_server._interval([1.05, 1.06, 1.07, 1.08, 1.09]), 1.0
    )  # every resampled median above


def test_every_server_starts_with_the_same_malloc_thresholds() -> None:
    """Catches: a server left to glibc's dynamic mmap threshold, under which the stock loop's 256 KiB read
    buffers were mapped afresh at each read in some runs and not in others (about 31 against 12 µs per message);
    or a GLIBC_TUNABLES of the caller's dropped."""
    assert idle_server.server_environment({"PATH": "/bin"}) == {
        "PATH": "/bin",
        "GLIBC_TUNABLES": idle_server.MALLOC_TUNABLES,
    }
    mine = idle_server.server_environment({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"})["GLIBC_TUNABLES"]
    assert mine == "glibc.malloc.arena_max=2:" + idle_server.MALLOC_TUNABLES
    assert "glibc.malloc.mmap_threshold=" in mine


def test_touch_ratios_run(capsys: pytest.CaptureFixture[str]) -> None:
    touch_ratios.main(["--sizes", "2000", "--rounds", "1"])
    printed = capsys.readouterr().out
    assert "| c |" in printed or "| py |" in printed
    assert "re-insert" in printed


def test_touch_call_run(capsys: pytest.CaptureFixture[str]) -> None:
    assert touch_call.main(["--timers", "200", "--rounds", "1"]) == 0
    printed = capsys.readouterr().out
    assert "| asyncio | hot |" in printed
    assert "| asyncio | cold |" in printed
