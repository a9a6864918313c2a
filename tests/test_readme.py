"""The Python examples of the README and of the user guide (docs/guide.md), extracted from them and run; and
the README's set-up commands, which CI runs."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from redis_server import RedisServer
from support import ASYNCIO_ONLY

import timer_manager

# The examples show the API, not a core: they run once, on the core timer_manager picked (as a reader's run).
pytestmark = pytest.mark.usefixtures("default_core")

ROOT = Path(__file__).resolve().parent.parent
# The pages whose examples run here, and each one's python blocks.
README, GUIDE = "README.md", "docs/guide.md"
PAGES = {name: (ROOT / name).read_text(encoding="utf-8") for name in (README, GUIDE)}
BLOCKS: dict[str, list[str]] = {
    name: re.findall(r"```python\n(.*?)```", text, flags=re.S) for name, text in PAGES.items()
}


def block(marker: str, page: str = README) -> str:
    found = [code for code in BLOCKS[page] if marker in code]
    assert len(found) == 1, f"expected one python block containing {marker!r} in {page}"
    return found[0]


def api_namespace() -> dict[str, Any]:
    """What the README's API import line brings in, plus asyncio (the guide's examples assume them)."""
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
    ("page", "marker", "output"),
    [
        (README, 'handle.set_timer("my_timer", 1.0)', "Timer 'my_timer' expired!\n"),
        (README, 'TimerManager.open("sessions", heartbeat_interval=0.01)', "session:42 expired\n"),
        (GUIDE, 'handle.set_timers((f"conn:{i}", 0.5)', "9998 connections timed out\n"),
        (README, "timeouts.touch(name)", "quiet: idle for 0.5 s, closed\nchatty: idle for 0.5 s, closed\n"),
    ],
    ids=["quick-start", "open", "batches", "idle-timeouts"],
)
def test_complete_programs_run_as_written_and_quietly(page: str, marker: str, output: str, tmp_path: Path) -> None:
    """The README's Quick start and open() example and the guide's batches example, each as the complete
    program the page shows, in a fresh interpreter and an empty folder: each ends, prints what it says, and
    writes nothing to stderr (no warning on a default logging set-up). catches: an example that never ends,
    a missing import, an API drift, a WARNING a newcomer would see."""
    result = run_as_a_program(block(marker, page), tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == output
    assert result.stderr == ""


def test_the_redis_example_runs_as_written(redis_server: RedisServer, tmp_path: Path) -> None:
    """The README's Redis example, as a complete program, against the suite's own redis-server (its
    ``REDIS_URL``). catches: an API drift of the Redis backend, an example that never ends or warns."""
    code = block("from timer_manager.redis import RedisBackend")
    script = tmp_path / "example.py"
    script.write_text(code, encoding="utf-8")
    environment = {**os.environ, "REDIS_URL": redis_server.url}
    result = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=tmp_path,
        env=environment,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "session:42 expired for user 42\n"
    assert result.stderr == ""


def test_the_redis_backend_without_redis_py_names_the_extra_to_install(tmp_path: Path) -> None:
    """``from timer_manager.redis import RedisBackend`` (the README's Redis example) where redis-py is not
    installed (its import blocked here): the error names the ``redis`` extra and the command that installs it,
    and is still a ``ModuleNotFoundError`` for ``redis``. catches: a newcomer who skipped the extra left
    with a bare "No module named 'redis'" from deep inside the package."""
    code = (
        "import sys, importlib.abc\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path, target=None):\n"
        "        if name == 'redis' or name.startswith('redis.'):\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "try:\n"
        "    from timer_manager.redis import RedisBackend\n"
        "except ModuleNotFoundError as exc:\n"
        "    print(exc.name)\n"
        "    print(exc)\n"
    )
    result = run_as_a_program(code, tmp_path)
    assert result.returncode == 0, result.stderr
    name, message = result.stdout.split("\n", 1)
    assert name == "redis"
    assert "timer_manager.redis needs redis-py" in message
    assert "python -m pip install '.[redis]'" in message


@ASYNCIO_ONLY
@pytest.mark.looptime
async def test_basic_example_virtual(capsys: pytest.CaptureFixture[str]) -> None:
    """The guide's basic example (the Rust original's) as given (1 s and 2 s timers, in virtual time).
    catches: the example hanging or printing another timer first."""
    namespace = api_namespace()
    exec(block("async def basic()", GUIDE), namespace)
    await asyncio.wait_for(namespace["basic"](), 10)
    assert capsys.readouterr().out == "Timer timer1 expired\n"


async def test_basic_and_non_blocking_examples_real_time(capsys: pytest.CaptureFixture[str]) -> None:
    """The guide's basic and non-blocking examples as given, in real time on both loops.
    catches: try_ / QueueEmpty / ManagerClosed behaving differently from what the example relies on."""
    namespace = api_namespace()
    exec(block("async def basic()", GUIDE), namespace)
    exec(block("async def non_blocking()", GUIDE), namespace)
    await asyncio.wait_for(namespace["non_blocking"](), 30)
    assert capsys.readouterr().out == "Timer set successfully\nTimer quick_timer expired\n"
    await asyncio.wait_for(namespace["basic"](), 30)
    assert capsys.readouterr().out == "Timer timer1 expired\n"


def test_the_guides_event_class_is_the_real_one() -> None:
    """The guide's Events section shows ``TimerExpired`` and ``TimerEvent`` as code: run, they define a class
    with the real one's fields, defaults and dataclass options, and a union of it alone. catches: the page
    showing a field, a default or an option the class does not have (or not showing one it has)."""
    namespace: dict[str, Any] = {}
    exec(
        "from dataclasses import dataclass\nfrom typing import Any, Union\n" + block("class TimerExpired:", GUIDE),
        namespace,
    )
    shown, real = namespace["TimerExpired"], timer_manager.TimerExpired

    def outline(cls: Any) -> tuple[list[tuple[str, Any]], bool, bool]:
        fields = [(field.name, field.default) for field in dataclasses.fields(cls)]
        return fields, cls.__dataclass_params__.frozen, hasattr(cls, "__slots__")

    assert outline(shown) == outline(real)
    assert namespace["TimerEvent"] is shown  # a union of one type is that type
    assert timer_manager.TimerEvent is real


async def test_the_guides_match_example_runs() -> None:
    """The guide's ``match`` on ``recv_event()``, as the body of a function: an event takes the
    ``TimerExpired`` case (binding ``name`` and ``data``), ``None`` the other. catches: an event type that a
    keyword class pattern does not match."""
    namespace = api_namespace()
    body = textwrap.indent(block("match await handle.recv_event():", GUIDE), "    ")
    exec(f"async def receive(handle):\n{body}    return locals()\n", namespace)

    class Handle:
        def __init__(self, event: object) -> None:
            self.event = event

        async def recv_event(self) -> object:
            return self.event

    bound = await namespace["receive"](Handle(timer_manager.TimerExpired("t", 1.0, "payload")))
    assert (bound["name"], bound["data"]) == ("t", "payload")
    assert "name" not in await namespace["receive"](Handle(None))


@ASYNCIO_ONLY
@pytest.mark.looptime
async def test_interval_example_virtual() -> None:
    """The guide's set_interval example: fires at 15 s, then every 15 s, with its payload."""
    code = block('set_interval("keepalive"', GUIDE)
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


@pytest.mark.skipif(sys.version_info < (3, 11), reason="looptime needs Python >= 3.11, as the guide says")
def test_testing_section_example_runs_in_a_fresh_project(tmp_path: Path) -> None:
    """The guide's "Testing with virtual time" example, saved as a test file in an empty project (no pytest
    configuration, so pytest-asyncio's default strict mode) and run with pytest in a fresh interpreter.
    catches: an example that needs configuration the guide does not show."""
    code = block("async def test_session_expires_after_an_hour", GUIDE)
    (tmp_path / "test_sessions.py").write_text(code, encoding="utf-8")
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


# Each python block of the pages, in order, by a line only it holds; the tests above run every one of them
# (they find a block by that line): a new block needs a test there and its line here.
RUN_HERE = {
    README: (
        'handle.set_timer("my_timer", 1.0)',
        'TimerManager.open("sessions", heartbeat_interval=0.01)',
        "from timer_manager import (TimerManager",
        "timeouts.touch(name)",
        "from timer_manager.redis import RedisBackend",
    ),
    GUIDE: (
        "class TimerExpired:",
        "match await handle.recv_event():",
        'set_interval("keepalive"',
        'handle.set_timers((f"conn:{i}", 0.5)',
        "async def test_session_expires_after_an_hour",
        "async def basic()",
        "async def non_blocking()",
    ),
}


@pytest.mark.parametrize("page", [README, GUIDE])
def test_every_example_is_run_here(page: str) -> None:
    """Every python block of the README and the guide is one that a test of this module runs. catches: an
    example added (or changed past its marker) that no test runs, so that it can drift from the API unseen."""
    markers = RUN_HERE[page]
    assert [[marker for marker in markers if marker in code] for code in BLOCKS[page]] == [[m] for m in markers]


def test_the_set_up_commands_are_the_ones_tested_and_run_by_ci() -> None:
    """The README's Install section has two commands: the install and the demo that
    tests/test_command_line.py runs the way this one does (``python -I -m timer_manager demo``), and the test
    command, which .ci/run runs word for word. catches: the README and CI drifting apart, so that a newcomer
    copies a command that CI never ran."""
    install = PAGES[README].split("\n## Install\n", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"```bash\n(.*?)\n```", install, flags=re.S)
    assert commands == [
        "python -m pip install . && python -I -m timer_manager demo",
        "python -m pip install -e '.[test]' && python -m pytest",
    ]
    ci = ROOT / ".ci" / "run"
    if not ci.exists():
        pytest.skip(f"no {ci} here (the suite runs against an installed wheel)")
    assert f"    {commands[1]} || rc=$?\n" in ci.read_text(encoding="utf-8")
