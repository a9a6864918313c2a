"""A smoke run of ``library_samples.py`` in the normal test run, where ``perf`` may sample: one short round at 100
connections. Checks what the counts rest on (each build's samples are its own server's, taken in its own copy of
the compiled core), never the counts themselves."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import library_samples
import pytest

from timer_manager import _env


def _perf_can_sample() -> bool:
    if not sys.platform.startswith("linux") or shutil.which("perf") is None:
        return False
    probe = ["perf", "record", "-q", "-e", "cpu-clock", "-o", "/dev/null", "--", "true"]
    try:
        return subprocess.run(probe, check=False, capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.mark.skipif(
    _env.no_extensions(),
    reason=f"{_env.NO_EXTENSIONS_VARIABLE} is set: the servers measure the compiled core only",
)
@pytest.mark.skipif(not _perf_can_sample(), reason="perf is missing or may not sample processes here")
def test_each_builds_samples_come_from_its_own_server_and_core(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Catches: the two servers' pids taken for each other, or the baseline's server running this checkout's core
    (the comparison would then be of one build with itself)."""
    here = Path(library_samples.__file__).resolve().parent.parent
    baseline = tmp_path / "baseline"
    shutil.copytree(here / "timer_manager", baseline / "timer_manager", ignore=shutil.ignore_patterns("__pycache__"))
    argv = ["--baseline", str(baseline), "--rounds", "1", "--connections", "100", "--loop", "asyncio"]
    argv += ["--window", "6", "--delay", "2", "--seconds", "3", "--frequency", "4999"]
    assert library_samples.main(argv) == 0
    out = capsys.readouterr().out
    assert "| this |" in out
    assert "| base |" in out
    # The report lists each build's core files, this checkout's first.
    this_line, base_line = (line for line in out.splitlines() if line.startswith("    (in "))
    assert str(baseline / "timer_manager") in base_line, out
    assert str(here / "timer_manager") in this_line, out
    assert str(baseline) not in this_line, out
