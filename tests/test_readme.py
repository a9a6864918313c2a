"""The README's Python examples, extracted from README.md and run."""

from __future__ import annotations

import asyncio
import re
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


def test_quick_start_runs(capsys: pytest.CaptureFixture[str]) -> None:
    """The Quick start program, with its 5 s timer shortened to 0.05 s. catches: an API drift that breaks
    the first example a reader runs."""
    code = block("asyncio.run(main())")
    assert 'handle.set_timer("my_timer", 5.0)' in code
    code = code.replace('handle.set_timer("my_timer", 5.0)', 'handle.set_timer("my_timer", 0.05)')
    exec(compile(code, "README quick start", "exec"), {"__name__": "readme"})
    assert capsys.readouterr().out == "Timer 'my_timer' expired!\n"


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
async def test_open_example_virtual() -> None:
    """The TimerManager.open example, its `...` body replaced by collecting and leaving the loop.
    catches: open() not yielding a working handle, or the async-for not delivering."""
    code = block('TimerManager.open("sessions", heartbeat_interval')
    body = "\n".join(
        "    " + line for line in code.replace("        ...", "        got.append(event)\n        break").splitlines()
    )
    namespace = api_namespace()
    exec("async def example(got):\n" + body, namespace)
    got: list[Any] = []
    await asyncio.wait_for(namespace["example"](got), 100)
    assert [event.name for event in got] == ["session:42"]


@ASYNCIO_ONLY
@pytest.mark.looptime
async def test_batches_example_virtual() -> None:
    """The batches-and-streams example: 10,000 sets, 2 cancels, then every event in order until stop.
    catches: set_timers/cancel_timers/recv_events not doing what the example shows."""
    code = block('handle.set_timers((f"conn:{i}"')
    code = code.replace("        ...", "        got.append(event.name)")
    namespace = api_namespace()
    exec("async def example(handle, got):\n" + "\n".join("    " + l for l in code.splitlines()), namespace)
    async with timer_manager.TimerManager.open("batches", 0.01) as handle:
        got: list[str] = []

        async def stop_later() -> None:
            await asyncio.sleep(60)
            await handle.shutdown()

        stopper = asyncio.create_task(stop_later())
        await asyncio.wait_for(namespace["example"](handle, got), 100)
        await stopper
    assert got == [f"conn:{i}" for i in range(10_000) if i not in (1, 2)]


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


@ASYNCIO_ONLY
@pytest.mark.looptime
async def test_testing_section_example_as_given() -> None:
    """The "Testing code that uses timer_manager" example, run as the complete test file it presents.
    catches: an example that cannot run as written (e.g. a missing import)."""
    namespace: dict[str, Any] = {"__name__": "readme_testing_example"}
    exec(block("async def test_session_expires_after_an_hour"), namespace)
    await asyncio.wait_for(namespace["test_session_expires_after_an_hour"](), 10_000)
