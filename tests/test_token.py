"""CancellationToken, as in tokio_util: cancel (any thread, idempotent), is_cancelled, cancelled(),
child tokens, callbacks."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading

import pytest

from timer_manager import CancellationToken


def test_cancel_is_idempotent_and_sticky() -> None:
    """catches: cancel toggling, or a second cancel re-running callbacks."""
    token = CancellationToken()
    calls: list[int] = []
    token.add_callback(lambda: calls.append(1))
    assert not token.is_cancelled()
    token.cancel()
    token.cancel()
    assert token.is_cancelled()
    assert calls == [1]
    assert "cancelled" in repr(token)


def test_children_follow_parent_never_the_reverse() -> None:
    """A child (and grandchild) is cancelled with its parent; cancelling a child leaves the parent and
    siblings alone; a child of a cancelled token is born cancelled.
    catches: upward propagation; children created late staying active."""
    parent = CancellationToken()
    child, sibling = parent.child_token(), parent.child_token()
    grandchild = child.child_token()
    child.cancel()
    assert (parent.is_cancelled(), child.is_cancelled(), grandchild.is_cancelled(), sibling.is_cancelled()) == (
        False,
        True,
        True,
        False,
    )
    parent.cancel()
    assert sibling.is_cancelled()
    assert parent.child_token().is_cancelled()


def test_add_callback_unregister_and_after_cancel() -> None:
    """A removed callback is not called; one added after cancel runs at once.
    catches: unregister not working; late callbacks never called."""
    token = CancellationToken()
    calls: list[str] = []
    remove = token.add_callback(lambda: calls.append("removed"))
    token.add_callback(lambda: calls.append("kept"))
    remove()
    token.cancel()
    token.add_callback(lambda: calls.append("late"))
    assert calls == ["kept", "late"]


async def test_cancelled_waits_and_wakes_from_another_thread() -> None:
    """await cancelled() waits until cancel() from another thread, and returns at once if already cancelled.
    catches: cancelled() not woken thread-safely; cancelled() waiting on an already cancelled token."""
    token = CancellationToken()
    waiter = asyncio.create_task(token.cancelled())
    await asyncio.sleep(0.01)
    assert not waiter.done()
    thread = threading.Thread(target=token.cancel)
    thread.start()
    await asyncio.wait_for(waiter, 10)
    thread.join()
    await asyncio.wait_for(token.cancelled(), 1)


async def test_child_cancelled_waiter_woken_by_parent() -> None:
    """await child.cancelled() returns when the parent is cancelled. catches: children not notified."""
    parent = CancellationToken()
    child = parent.child_token()
    waiter = asyncio.create_task(child.cancelled())
    await asyncio.sleep(0)
    parent.cancel()
    await asyncio.wait_for(waiter, 10)


def test_a_grandchild_follows_its_grandparent_when_the_child_in_between_is_dropped() -> None:
    """A token's descendants are cancelled with it even where only the grandchild is kept
    (``root.child_token().child_token()``), as with tokio_util's tokens.
    catches: a parent holding its children weakly and a child holding nothing of its parent, so that the
    middle token was collected and the grandchild never learnt of the cancellation."""
    import gc

    root = CancellationToken()
    grandchild = root.child_token().child_token()
    gc.collect()
    root.cancel()
    assert grandchild.is_cancelled()


async def test_a_cancel_while_the_waiters_loop_closes_logs_no_error(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A thread cancels the token as the loop of a ``cancelled()`` waiter closes: the loop is still open when the
    wake-up looks and closed when it calls (``call_soon_threadsafe`` raises ``RuntimeError``, as a closed loop's
    does). There is nobody left to wake. Catches: the wake-up's error logged at ERROR as a raising callback."""
    token = CancellationToken()
    waiting = asyncio.ensure_future(token.cancelled())
    await asyncio.sleep(0)
    loop = asyncio.get_running_loop()

    def closed_meanwhile(*args: object) -> None:
        raise RuntimeError("Event loop is closed")

    monkeypatch.setattr(loop, "call_soon_threadsafe", closed_meanwhile)
    canceller = threading.Thread(target=token.cancel)  # not to_thread: its answer comes through that call
    with caplog.at_level(logging.ERROR, logger="timer_manager"):
        canceller.start()
        canceller.join()
    monkeypatch.undo()
    assert [record.getMessage() for record in caplog.records] == []
    waiting.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await waiting
