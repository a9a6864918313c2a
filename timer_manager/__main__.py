"""``python -m timer_manager demo``: a short live demonstration."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from . import CORE, TimerExpired, TimerManager


async def demo() -> None:
    """Set a few timers, re-set and cancel some, print the expiries as they come, shut down."""
    print(f"timer_manager demo (table: {CORE}, Python {sys.version.split()[0]})")
    manager, handle = TimerManager.new("demo", 0.01, 100, 100)
    task = asyncio.create_task(manager.run())
    loop = asyncio.get_running_loop()
    start = loop.time()
    await handle.set_timer("session-timeout", 0.6)
    await handle.set_timer("retransmit", 0.2)
    await handle.set_timer("keepalive", 0.4, data={"peer": "10.0.0.7"})
    await handle.set_timer("retransmit", 0.3)  # re-set: replaces the first deadline
    await handle.set_timer("doomed", 0.1)
    await handle.cancel_timer("doomed")  # cancelled: never fires
    await handle.set_interval("tick", 0.25)
    await handle.flush()
    next_due = handle.next_deadline() or start
    print(f"  {handle.pending_count()} timers pending; the next is due in {next_due - start:.2f}s")
    seen = 0
    async for event in handle:
        if isinstance(event, TimerExpired):
            late_ms = (loop.time() - event.deadline) * 1000
            print(
                f"  +{event.deadline - start:.2f}s  {event.name!r} expired  (late {late_ms:.1f} ms, data={event.data})"
            )
        seen += 1
        if seen == 5:
            await handle.shutdown()
    await task
    stats = manager.stats()
    print(f"  stopped: {stats.fired} fired, {stats.reset} re-set, {stats.cancelled} cancelled")


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(prog="python -m timer_manager")
    parser.add_argument("command", choices=["demo"], help="what to run")
    parser.add_argument("-v", "--verbose", action="store_true", help="show the manager's log")
    args = parser.parse_args(argv)
    if args.verbose:
        logging.basicConfig(level=logging.DEBUG, format="%(levelname)s %(name)s: %(message)s")
    asyncio.run(demo())
    return 0


if __name__ == "__main__":
    sys.exit(main())
