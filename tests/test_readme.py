"""The README's Python examples, extracted from README.md and run."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from support import ASYNCIO_ONLY

import timer_manager

# The examples show the API, not a core: they run once, on the core timer_manager picked (as a reader's run).
pytestmark = pytest.mark.usefixtures("default_core")

README = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
BLOCKS: list[str] = re.findall(r"```python\n(.*?)```", README, flags=re.S)


def block(marker: str) -> str:
    found = [code for code in BLOCKS if marker in code]
    assert len(found) == 1, f"expected one README python block containing {marker!r}"
    return found[0]


def api_namespace() -> dict[str, Any]:
    """What the README's API import line brings in, plus asyncio."""
    namespace: dict[str, Any] = {"asyncio": asyncio}
    exec(block("from timer_manager import (TimerManager"), namespace)
    return namespace


def run_as_a_program(code: str, folder: Path) -> subprocess.CompletedProcess[str]:
    """Run ``code`` as a reader would: saved to a file in an empty folder, in a fresh interpreter."""
    script = folder / "example.py"
    script.write_text(code, encoding="utf-8")
    return subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120, check=False, cwd=folder
    )


@pytest.mark.parametrize(
    ("marker", "output"),
    [
        ('handle.set_timer("my_timer", 1.0)', "Timer 'my_timer' expired!\n"),
        ('TimerManager.open("sessions", heartbeat_interval=0.01)', "session:42 expired\n"),
        ('handle.set_timers((f"conn:{i}", 0.5)', "9998 connections timed out\n"),
    ],
    ids=["quick-start", "open", "batches"],
)
def test_complete_programs_run_as_written_and_quietly(marker: str, output: str, tmp_path: Path) -> None:
    """The Quick start, the open() example and the batches example, each as the complete program the
    README shows, in a fresh interpreter and an empty folder: each ends, prints what it says, and writes
    nothing to stderr (no warning on a default logging set-up). catches: an example that never ends, a
    missing import, an API drift, a WARNING a newcomer would see."""
    result = run_as_a_program(block(marker), tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == output
    assert result.stderr == ""


@ASYNCIO_ONLY
@pytest.mark.looptime
async def test_basic_example_virtual(capsys: pytest.CaptureFixture[str]) -> None:
    """The basic example as given (1 s and 2 s timers, in virtual time). catches: the example hanging
    or printing another timer first."""
    namespace = api_namespace()
    exec(block("async def basic()"), namespace)
    await asyncio.wait_for(namespace["basic"](), 10)
    assert capsys.readouterr().out == "Timer timer1 expired\n"


async def test_basic_and_non_blocking_examples_real_time(capsys: pytest.CaptureFixture[str]) -> None:
    """The basic and non-blocking examples as given, in real time on both loops.
    catches: try_ / QueueEmpty / ManagerClosed behaving differently from what the example relies on."""
    namespace = api_namespace()
    exec(block("async def basic()"), namespace)
    exec(block("async def non_blocking()"), namespace)
    await asyncio.wait_for(namespace["non_blocking"](), 30)
    assert capsys.readouterr().out == "Timer set successfully\nTimer quick_timer expired\n"
    await asyncio.wait_for(namespace["basic"](), 30)
    assert capsys.readouterr().out == "Timer timer1 expired\n"


@ASYNCIO_ONLY
@pytest.mark.looptime
async def test_interval_example_virtual() -> None:
    """The set_interval example: fires at 15 s, then every 15 s, with its payload."""
    code = block('set_interval("keepalive"')
    namespace = api_namespace()
    exec("async def example(handle, peer):\n    " + code.strip(), namespace)
    loop = asyncio.get_running_loop()
    async with timer_manager.TimerManager.open("ka", 0) as handle:
        start = loop.time()
        await namespace["example"](handle, "peer-1")
        events = [await handle.recv_event() for _ in range(3)]
    assert [(e.name, e.deadline - start, e.data) for e in events if e] == [
        ("keepalive", 15.0, "peer-1"),
        ("keepalive", 30.0, "peer-1"),
        ("keepalive", 45.0, "peer-1"),
    ]


@pytest.mark.skipif(sys.version_info < (3, 11), reason="looptime needs Python >= 3.11, as the README says")
def test_testing_section_example_runs_in_a_fresh_project(tmp_path: Path) -> None:
    """The "Testing code that uses timer_manager" example, saved as a test file in an empty project (no
    pytest configuration, so pytest-asyncio's default strict mode) and run with pytest in a fresh
    interpreter. catches: an example that needs configuration the README does not show."""
    (tmp_path / "test_sessions.py").write_text(block("async def test_session_expires_after_an_hour"), encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_sessions.py"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout
