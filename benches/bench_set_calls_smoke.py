"""Smoke run of ``set_calls.py`` in the normal test run, so that it cannot rot: one round at 400 timers, this
checkout against itself as the baseline. Its child processes check that every set took effect. Nothing here
asserts speed."""

from __future__ import annotations

from pathlib import Path

import pytest
import set_calls

from timer_manager import _env


def test_set_calls_runs_both_builds_and_reports(capsys: pytest.CaptureFixture[str]) -> None:
    if _env.no_extensions():
        pytest.skip(f"{_env.NO_EXTENSIONS_VARIABLE} is set: the script measures the compiled core")
    set_calls.main(["--quick", "--timers", "400", "--baseline", str(Path(set_calls.__file__).parent.parent)])
    out = capsys.readouterr().out
    for line in ("this: spread", "base: spread", "spread: this / base", "burst: this / base"):
        assert line in out, out
