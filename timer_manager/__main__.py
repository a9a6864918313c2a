"""``python -m timer_manager``: ``demo`` (a short live demonstration), ``info`` (what is installed), ``--version``."""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import logging
import os
import platform
import sys

from . import TimerExpired, TimerManager, __version__
from ._core import CORE, CORE_REASON
from ._env import no_extensions


def _say(text: str) -> None:
    print(text, flush=True)


async def demo() -> None:
    """Set a few timers, re-set, cancel and repeat some, saying what it does, and print the expiries."""
    _say(f"timer_manager {__version__} demo: {CORE} core, Python {platform.python_version()}")
    _say("A manager with a 10 ms heartbeat; every deadline below is relative to now.")
    manager, handle = TimerManager.new("demo", 0.01, 100, 100)
    task = asyncio.create_task(manager.run())
    loop = asyncio.get_running_loop()
    start = loop.time()
    _say("  set     'session-timeout'  to fire in 0.60 s")
    await handle.set_timer("session-timeout", 0.6)
    _say("  set     'retransmit'       to fire in 0.20 s")
    await handle.set_timer("retransmit", 0.2)
    _say("  set     'keepalive'        to fire in 0.40 s, with data {'peer': '10.0.0.7'}")
    await handle.set_timer("keepalive", 0.4, data={"peer": "10.0.0.7"})
    _say("  re-set  'retransmit'       to fire in 0.30 s instead: its first deadline is gone")
    await handle.set_timer("retransmit", 0.3)
    _say("  set     'doomed'           to fire in 0.10 s, then cancel it: it never fires")
    await handle.set_timer("doomed", 0.1)
    await handle.cancel_timer("doomed")
    _say("  repeat  'tick'             every 0.25 s")
    await handle.set_interval("tick", 0.25)
    await handle.flush()
    _say(f"{handle.pending_count()} timers pending. Expiries, as they come (time since the start, lateness):")
    seen = 0
    async for event in handle:
        if isinstance(event, TimerExpired):
            late_ms = (loop.time() - event.deadline) * 1000
            data = "" if event.data is None else f", data {event.data}"
            _say(f"  +{event.deadline - start:.2f} s  {event.name!r} expired (late {late_ms:.1f} ms{data})")
        seen += 1
        if seen == 5:
            _say("Five events received: shutting down (the rest are discarded).")
            await handle.shutdown()
            break  # a sixth may be ready already, if the machine was slow
    await task
    stats = manager.stats()
    _say(f"Stopped: {stats.fired} fired, {stats.reset} re-set, {stats.cancelled} cancelled.")


def info() -> None:
    """Say which version, which core (and why), which Python and which event loops are in use."""
    _say(f"timer_manager {__version__}")
    _say(f"  package:  {os.path.dirname(os.path.abspath(__file__))}")
    _say(f"  core:     {CORE} ({CORE_REASON})")
    if CORE == "python" and not no_extensions():
        _say("            the pure-Python core works, but its timer table is several times slower")
    _say(f"  python:   {platform.python_implementation()} {platform.python_version()} on {platform.platform()}")
    uvloop = "installed" if importlib.util.find_spec("uvloop") is not None else "not installed"
    _say(f"  uvloop:   {uvloop}")


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(
        prog="python -m timer_manager", description="High-volume named timers for asyncio."
    )
    parser.add_argument("--version", action="version", version=f"timer_manager {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    demo_parser = commands.add_parser("demo", help="run a short live demonstration")
    demo_parser.add_argument("-v", "--verbose", action="store_true", help="show the manager's log as well")
    commands.add_parser("info", help="say which version and which core (compiled or pure Python) is in use, and why")
    args = parser.parse_args(argv)
    try:
        if args.command == "info":
            info()
            return 0
        if args.verbose:
            logging.basicConfig(level=logging.DEBUG, format="%(levelname)s %(name)s: %(message)s")
        asyncio.run(demo())
    except BrokenPipeError:
        # The reader went away (`... | head -2`): stop quietly, and keep Python from complaining at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
