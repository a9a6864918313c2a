"""``python -m timer_manager``: ``--version``, ``info`` and ``demo``, as a user runs them (subprocesses)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import timer_manager
import timer_manager.__main__ as main_module

ROOT = Path(__file__).absolute().parent.parent


def _run(
    *args: str, env: dict[str, str] | None = None, flags: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *flags, "-m", "timer_manager", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
        cwd=ROOT,
    )


def test_version_prints_the_package_version() -> None:
    result = _run("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"timer_manager {timer_manager.__version__}"


def test_info_says_which_core_is_live_and_why() -> None:
    """``info`` names the live core and the reason; with the variable set it says so. Catches: a user
    unable to learn, without ``pip -v``, that the pure-Python core is in use."""
    result = _run("info")
    assert result.returncode == 0, result.stderr
    assert f"core:     {timer_manager.CORE} (" in result.stdout
    forced = _run("info", env={**os.environ, "TIMER_MANAGER_NO_EXTENSIONS": "1"})
    assert "core:     python (TIMER_MANAGER_NO_EXTENSIONS is set)" in forced.stdout


def test_demo_says_what_it_does_and_ends() -> None:
    """The demo narrates what it sets, re-sets, cancels and repeats, prints five expiries and stops."""
    result = _run("demo")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for needle in ("set     'retransmit'", "re-set  'retransmit'", "then cancel it", "repeat  'tick'", "Stopped:"):
        assert needle in out
    assert out.count(" expired (late ") == 5
    assert "'doomed' expired" not in out


@pytest.mark.usefixtures("default_core")
def test_the_demo_prints_five_expiries_however_slow_the_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run in-process, with the machine made slow at the fourth expiry (0.5 s in), so that the fifth (0.6 s) and
    the next tick (0.75 s) are both ready when the fifth is received: the demo still prints five expiries, as it
    says. Catches: the demo printing the events ready at its shutdown too (the README's first command, on a loaded
    machine)."""
    lines: list[str] = []

    def say(line: str) -> None:
        lines.append(line)
        if " expired (late " in line and sum(" expired (late " in seen for seen in lines) == 4:
            time.sleep(0.4)  # the loop is held: the fifth expiry and the next tick fall due meanwhile

    monkeypatch.setattr(main_module, "_say", say)
    asyncio.run(main_module.demo())
    assert sum(" expired (late " in line for line in lines) == 5, lines
    assert lines[-1].startswith("Stopped:")


def test_demo_into_a_closed_pipe_ends_quietly() -> None:
    """``python -m timer_manager demo | head -2``: no BrokenPipeError traceback."""
    demo = subprocess.Popen(
        [sys.executable, "-m", "timer_manager", "demo"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
    )
    assert demo.stdout is not None
    assert demo.stderr is not None
    demo.stdout.readline()
    demo.stdout.close()  # the reader goes away, as head does
    _, err = demo.communicate(timeout=60)
    assert b"Traceback" not in err
    assert b"BrokenPipeError" not in err


def test_the_readmes_first_command_shows_the_installed_core_from_the_clone() -> None:
    """``python -I -m timer_manager demo`` from the repository's root (the README's first command, after
    the install) runs the installed package, whose core is the live one. Catches: the source folder
    shadowing the installed package, so that a newcomer sees the pure-Python core after a good build."""
    demo = _run("demo", flags=("-I",))
    assert demo.returncode == 0, demo.stderr
    assert f": {timer_manager.CORE} core," in demo.stdout.splitlines()[0]


_BLOCK_COMPILED_CORE = (
    "import sys, importlib.abc\n"
    "class Block(importlib.abc.MetaPathFinder):\n"
    "    def find_spec(self, name, path, target=None):\n"
    "        if name == 'timer_manager._core_c':\n"
    "            raise ImportError('no compiled core in this test')\n"
    "sys.meta_path.insert(0, Block())\n"
)


def info_without_compiled_core(env: dict[str, str], warnings: str) -> subprocess.CompletedProcess[str]:
    """``info()`` in a child interpreter whose import of the compiled core is blocked."""
    code = _BLOCK_COMPILED_CORE + "import timer_manager, timer_manager.__main__ as m; m.info()"
    return subprocess.run(
        [sys.executable, "-W", warnings, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
        cwd=ROOT,
    )


def test_a_missing_compiled_core_is_announced_at_import() -> None:
    """Where the extension is missing (here: its import blocked), importing timer_manager warns that the
    slower pure-Python core is in use and how to choose it silently; ``info`` gives the reason. Catches: a
    failed compile going unnoticed without ``pip install -v``."""
    env = {key: value for key, value in os.environ.items() if key != "TIMER_MANAGER_NO_EXTENSIONS"}
    result = info_without_compiled_core(env, "always")
    assert result.returncode == 0, result.stderr
    assert "RuntimeWarning: timer_manager runs on its pure-Python core" in result.stderr
    assert "TIMER_MANAGER_NO_EXTENSIONS=1" in result.stderr
    assert "pip install --no-cache-dir --force-reinstall timer_manager" in result.stderr  # past pip's cached build
    assert "core:     python (the compiled extension could not be imported (no compiled core in this test))" in (
        result.stdout
    )


def test_info_hints_at_the_slower_core_unless_the_variable_chose_it() -> None:
    """``TIMER_MANAGER_NO_EXTENSIONS=0`` does not choose the pure-Python core (``_env.is_true``): where the
    extension is missing all the same, ``info`` still says that core is slower. Catches: ``info`` testing
    the variable for being non-empty instead of by the package's one rule, so that ``=0`` (or ``=no``)
    silenced the hint."""
    result = info_without_compiled_core({**os.environ, "TIMER_MANAGER_NO_EXTENSIONS": "0"}, "ignore")
    assert result.returncode == 0, result.stderr
    assert "core:     python (the compiled extension could not be imported" in result.stdout
    assert "several times slower" in result.stdout
