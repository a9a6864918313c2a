"""The Redis backend against a real redis-server (``redis_server`` in conftest.py): the same handle, with
timers kept on the server. Each test uses a namespace of its own."""

from __future__ import annotations

import asyncio
import datetime
import gc
import itertools
import json
import math
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from types import SimpleNamespace
from typing import Any, cast

import pytest
import redis.asyncio
from redis.crc import key_slot
from redis_server import LIMIT, RedisServer, client_of, eventually, receive

from timer_manager import CancellationToken, ManagerClosed, QueueFull, TimerHandle, TimerManager
from timer_manager.redis import RedisBackend, RedisTimerExpired, _link
from timer_manager.redis._engine import RedisEngine
from timer_manager.redis._event import entry_events, make_event
from timer_manager.redis._link import Link, _field, _payload, namespace_keys
from timer_manager.redis._scripts import APPLY, PROMOTE

pytestmark = pytest.mark.usefixtures("default_core")


@asynccontextmanager
async def opened(url: str, namespace: str, **options: Any) -> AsyncIterator[TimerHandle]:
    """A Redis-backed manager on ``namespace``, heartbeat 0 unless given."""
    manager_options = {
        key: options.pop(key)
        for key in ("heartbeat_interval", "event_buffer_size", "command_buffer_size", "max_timers")
        if key in options
    }
    manager_options.setdefault("heartbeat_interval", 0)
    backend = RedisBackend(url, namespace=namespace, **options)
    async with TimerManager.open(namespace, backend=backend, **manager_options) as handle:
        yield handle


async def server_time(client: redis.asyncio.Redis) -> float:
    seconds, micros = await client.time()
    return seconds + micros / 1e6


def key(namespace: str, name: str) -> str:
    return f"{{tm:{namespace}}}:{name}"


# ---------------------------------------------------------------------- time and order


async def test_deadlines_are_unix_time_by_the_server_clock_and_never_early(
    redis_server: RedisServer, namespace: str
) -> None:
    async with client_of(redis_server) as client, opened(redis_server.url, namespace) as handle:
        before = await server_time(client)
        durations = {f"t{index}": 0.02 + 0.01 * index for index in range(15)}
        for name, duration in durations.items():
            await handle.set_timer(name, duration)
        await handle.flush()
        after = await server_time(client)
        for event in await receive(handle, len(durations)):
            received_at = await server_time(client)
            assert received_at >= event.deadline  # never early, by the server's clock
            assert before + durations[event.name] - 0.001 <= event.deadline <= after + durations[event.name] + 0.001
            assert event.attempt == 1


async def test_events_come_in_deadline_then_set_order_and_ties_keep_set_order(
    redis_server: RedisServer, namespace: str
) -> None:
    # 3000 timers on 7 distinct durations: hundreds share each millisecond, and the promoter's batches of 1000
    # must not cut a millisecond's timers out of set order. The shortest duration leaves the three APPLY
    # batches time to reach the server before any deadline, even on a loaded machine (a set arriving after
    # its deadline comes after events promoted meanwhile: docs/redis.md, "Order").
    async with opened(redis_server.url, namespace, event_buffer_size=4000) as handle:
        items = [(f"n{index}", 0.5 + 0.01 * (index % 7)) for index in range(3000)]
        await handle.set_timers(items)
        events = await receive(handle, len(items))
    assert sorted(event.name for event in events) == sorted(name for name, _ in items)
    keys = [(event.deadline, event.generation) for event in events]
    assert keys == sorted(keys)
    set_order = {name: index for index, (name, _) in enumerate(items)}
    for earlier, later in itertools.pairwise(events):
        if earlier.deadline == later.deadline:
            assert set_order[earlier.name] < set_order[later.name]


async def test_two_managers_setting_into_one_namespace_get_one_order(redis_server: RedisServer, namespace: str) -> None:
    async with opened(redis_server.url, namespace) as first, opened(redis_server.url, namespace) as second:
        # Due half a second out, so that both managers' sets reach the server before any is due, even on a loaded
        # machine (a set arriving after its deadline comes after events promoted meanwhile: docs/redis.md, "Order").
        for index in range(200):
            await (first if index % 2 else second).set_timer(f"n{index}", 0.5 + 0.001 * (index % 13))
        await first.flush()
        await second.flush()
        got: list[RedisTimerExpired] = []

        async def drain(handle: TimerHandle) -> None:
            while len(got) < 200:
                try:
                    got.append(await asyncio.wait_for(handle.recv_event(), 0.5))  # type: ignore[arg-type]
                except asyncio.TimeoutError:
                    continue

        await asyncio.wait_for(asyncio.gather(drain(first), drain(second)), LIMIT)
    assert sorted(event.name for event in got) == sorted(f"n{index}" for index in range(200))  # each exactly once
    # The stream's order (entry ids) is the namespace's: by deadline, then by set.
    in_stream = sorted(got, key=lambda event: tuple(map(int, event.entry.split("-"))))
    keys = [(event.deadline, event.generation) for event in in_stream]
    assert keys == sorted(keys)


async def test_set_timer_at_takes_unix_time_or_an_aware_datetime(redis_server: RedisServer, namespace: str) -> None:
    async with client_of(redis_server) as client, opened(redis_server.url, namespace) as handle:
        now = await server_time(client)
        await handle.set_timer_at("number", now + 0.1)
        await handle.set_timer_at("aware", datetime.datetime.fromtimestamp(now + 0.05, tz=datetime.timezone.utc))
        with pytest.raises(ValueError, match="aware datetime"):
            await handle.set_timer_at("naive", datetime.datetime.now())
        with pytest.raises(TypeError, match="Unix time"):
            handle.try_set_timer_at("text", "soon")  # type: ignore[arg-type]
        events = await receive(handle, 2)
    assert [event.name for event in events] == ["aware", "number"]
    assert events[1].deadline == pytest.approx(now + 0.1, abs=0.0015)


async def test_touch_is_a_set_made_on_the_server_with_the_duration_last_set(
    redis_server: RedisServer, namespace: str
) -> None:
    """A touch is pipelined as a command and applied on the server in order: the deadline becomes the
    call's now + the duration last set (set_timer's, or set_timer_at's time left), the payload stays,
    a touch of a name that is not pending does nothing, and a touch moves a timer behind one set
    before it with the same deadline. Catches: a touch sent as a set with the wrong duration, one applied
    out of order with the commands before it, a lost payload."""
    # A second: neither is due before the touch, however loaded the machine. "at"'s time left is taken at its call
    # from the machine's clock (the server's): a Unix time read just before it leaves it the whole second.
    span = 1.0
    async with client_of(redis_server) as client, opened(redis_server.url, namespace) as handle:
        await handle.set_timer("idle", span, data="peer")
        await handle.set_timer_at("at", time.time() + span)
        await handle.flush()
        await asyncio.sleep(0.15)
        touched_at = await server_time(client)
        assert handle.touch("idle") is True  # queued: its answer on Redis
        assert handle.touch_many(["at", "missing"]) == 2
        handle.try_cancel_timer("missing")  # in order behind the touch: nothing to cancel either way
        await handle.flush()
        after = await server_time(client)
        assert await handle.get_pending_count() == 2
        idle_deadline = await handle.get_deadline("idle")
        at_deadline = await handle.get_deadline("at")
        assert idle_deadline is not None and at_deadline is not None
        assert touched_at + span - 0.002 <= idle_deadline <= after + span + 0.002
        assert touched_at + span - 0.01 <= at_deadline <= after + span + 0.002
        assert await handle.get_deadline("missing") is None
        events = await receive(handle, 2)
    assert {(event.name, event.data) for event in events} == {("idle", "peer"), ("at", None)}
    assert all(event.deadline >= touched_at + span - 0.01 for event in events)


async def test_a_touch_is_due_its_calls_now_plus_the_duration_however_long_it_waited_to_be_sent(
    redis_server: RedisServer, namespace: str
) -> None:
    """A touch's deadline is taken at the call, as a set's is: a touch made while the loop is busy (so that its
    command reaches the server half a second later) is due at the call's time plus the duration, not at the time
    the server applies it. Catches: a touch made due the server's now at the apply plus the duration."""
    span = 5.0
    async with opened(redis_server.url, namespace) as handle:
        await handle.set_timer("idle", span)
        await handle.flush()
        before = time.time()
        assert handle.touch("idle") is True
        assert handle.touch_many(["idle"]) == 1
        after = time.time()
        time.sleep(0.5)  # the loop is busy: the touches wait here to be sent
        await handle.flush()
        deadline = await handle.get_deadline("idle")
        assert deadline is not None
        # The server rounds a deadline up to its millisecond; the two clocks are this machine's. The way from the
        # batch's making to the server's apply is not taken off (as for a set), and takes milliseconds on a loaded
        # machine; the half second the touches waited here must be.
        assert before + span - 0.002 <= deadline <= after + span + 0.25, deadline - before - span
        await handle.cancel_all_timers()


# ---------------------------------------------------------------------- no stale events


async def test_a_reset_retracts_a_promoted_event_no_consumer_has_read(
    redis_server: RedisServer, namespace: str
) -> None:
    async with client_of(redis_server) as client, opened(redis_server.url, namespace, event_buffer_size=1) as handle:
        await handle.set_timer("first", 0.02)
        await handle.set_timer("second", 0.04)
        # "first" fills the one-event queue, so "second" is promoted and waits in the stream, unread.
        started = time.monotonic()
        while (old := await client.hget(key(namespace, "fired"), "second")) is None:
            assert time.monotonic() - started < LIMIT
            await asyncio.sleep(0.01)
        entry = cast("bytes", old).split(b"|")[0]
        await handle.set_timer("second", 0.3, data="new")
        await handle.flush()
        # its record is gone and its entry marked, so the consumer that reads it checks it on the server
        assert await client.hget(key(namespace, "gone"), entry) == b"1"
        assert await client.hget(key(namespace, "fired"), "second") != entry
        events = await receive(handle, 2)
    assert [(event.name, event.data) for event in events] == [("first", None), ("second", "new")]


async def test_a_cancel_from_another_manager_retracts_the_event_of_this_one(
    redis_server: RedisServer, namespace: str
) -> None:
    async with (
        opened(redis_server.url, namespace, event_buffer_size=1) as reader,
        opened(redis_server.url, namespace, event_buffer_size=1) as other,
    ):
        await reader.set_timers([("a", 0.02), ("b", 0.03), ("c", 0.04), ("d", 0.05)])
        await asyncio.sleep(0.2)  # all promoted; each manager holds one, the others wait in the stream
        await other.cancel_timers(["b", "c"])
        await other.flush()
        got: list[str] = []

        def take_what_is_ready() -> None:
            for handle in (reader, other):
                while True:
                    try:
                        got.append(handle.try_recv_event().name)
                    except Exception:  # QueueEmpty
                        break

        def a_and_d_taken() -> bool:  # however long the reads take on a loaded machine
            take_what_is_ready()
            return {"a", "d"} <= set(got)

        await eventually(a_and_d_taken, "a and d received")
        await asyncio.sleep(0.3)  # a stale "b" or "c" would come meanwhile
        take_what_is_ready()
    assert "b" not in got or "c" not in got  # at most the events already read before the cancel
    assert {"a", "d"} <= set(got)


async def test_a_retracted_event_in_a_shared_stream_entry_is_dropped_and_the_others_delivered(
    redis_server: RedisServer, namespace: str
) -> None:
    # Ten events promoted into one stream entry, none read; then "n3" is reset and "n6" cancelled on the server.
    # The entry cannot be deleted (it holds live events too): it is marked, and the consumer that reads it checks
    # its events there, so it hands over the eight current ones and, later, the reset one, never the stale two.
    async with client_of(redis_server) as client:
        now_ms = await _group_and_now(client, namespace)
        await _apply_at(client, namespace, [(f"n{index}", now_ms - 10) for index in range(10)])
        result = await _promote(client, namespace, pack=64)
        assert int(result[0]) == 10
        assert await client.xlen(key(namespace, "ev")) == 1
        command = b"a" + _field("n3") + _field(str(now_ms + 300)) + _field("0") + _payload(b"snew")
        command += b"c" + _field("n6") + _field("") + _field("") + _field("")
        await client.register_script(APPLY)(keys=namespace_keys(namespace), args=[0, "timers", command, b"", b""])
        async with opened(redis_server.url, namespace) as handle:
            events = await receive(handle, 9)
            await asyncio.sleep(0.2)
            with pytest.raises(Exception, match="no event is ready"):
                handle.try_recv_event()
            await handle.flush()
    names = [event.name for event in events]
    assert names == ["n0", "n1", "n2", "n4", "n5", "n7", "n8", "n9", "n3"]
    assert events[-1].data == "new" and events[-1].deadline >= (now_ms + 300) / 1000


async def test_a_stream_entry_is_acknowledged_with_the_last_of_its_events(
    redis_server: RedisServer, namespace: str
) -> None:
    # Two events share an entry: acknowledging one leaves the entry pending; a consumer that dies holding the
    # other hands over that one alone (delivered again, attempt 2), not the one acknowledged.
    async with client_of(redis_server) as client:
        async with opened(redis_server.url, namespace, ack="manual", claim_after=0.3) as handle:
            now = await server_time(client)
            await handle.set_timers([("a", 0.05), ("b", 0.05)])
            events = await receive(handle, 2)
            assert events[0].entry == events[1].entry  # promoted together
            await handle.ack(events[0])
            await handle.flush()
            assert await pending(client, namespace) == 1
        # stopped with "b" received and not acknowledged: it stays pending, and is taken over after claim_after
        async with opened(redis_server.url, namespace, claim_after=0.3) as other:
            again = await receive(other, 1)
            await asyncio.sleep(0.5)
            with pytest.raises(Exception, match="no event is ready"):
                other.try_recv_event()
            await other.flush()
        assert [(event.name, event.attempt) for event in again] == [("b", 2)]
        assert again[0].deadline >= now
        assert await pending(client, namespace) == 0


# ---------------------------------------------------------------------- acknowledgement


async def pending(client: redis.asyncio.Redis, namespace: str) -> int:
    summary = await client.xpending(key(namespace, "ev"), "timers")
    return int(summary["pending"])


async def test_ack_next_acknowledges_when_the_next_event_is_asked_for(
    redis_server: RedisServer, namespace: str
) -> None:
    async with client_of(redis_server) as client, opened(redis_server.url, namespace) as handle:
        await handle.set_timers([("a", 0.01), ("b", 0.02)])
        await receive(handle, 1)
        await handle.flush()
        assert await pending(client, namespace) >= 1  # "a" is held until the next receive
        await receive(handle, 1)
        await handle.flush()
        assert await pending(client, namespace) == 1  # "b" now
        await handle.shutdown()

        async def none_pending() -> bool:  # and at shutdown (once the stop has reached the server)
            return await pending(client, namespace) == 0

        await eventually(none_pending, "nothing pending after the shutdown")


async def test_ack_manual_and_ack_receive(redis_server: RedisServer, namespace: str) -> None:
    async with client_of(redis_server) as client:
        async with opened(redis_server.url, namespace, ack="manual") as handle:
            await handle.set_timers([("a", 0.01), ("b", 0.02)])
            events = await receive(handle, 2)
            await handle.flush()
            # One pending entry per stream entry: two, or one where a late wake-up (a loaded machine) promoted
            # both events together. Either way the first ack leaves one (b's entry, or the shared one).
            assert await pending(client, namespace) == len({event.entry for event in events})
            await handle.ack(events[0])
            assert await pending(client, namespace) == 1
            await handle.ack_events(events[1:])
            assert await pending(client, namespace) == 0
        async with opened(redis_server.url, namespace + "r", ack="receive") as handle:
            await handle.set_timer("a", 0.01)
            await receive(handle, 1)
            await handle.flush()
            summary = await client.xpending(key(namespace + "r", "ev"), "timers")
            assert summary["pending"] == 0


async def test_a_consumer_whose_loop_stalls_longer_than_claim_after_gets_each_event_once(
    redis_server: RedisServer, namespace: str
) -> None:
    # Its own claim took entries it held (received, their acknowledgement on its way; or read, the reply not
    # yet handled): before, one run in two handed the application an event a second time (attempt 2).
    names = [f"n{index:04}" for index in range(1000)]  # one batch: one clock reading for all their deadlines
    got: list[RedisTimerExpired] = []
    async with opened(redis_server.url, namespace, claim_after=0.05, event_buffer_size=64) as handle:
        await handle.set_timers([(name, 0.01 + index * 0.0005) for index, name in enumerate(names)])
        while len(got) < len(names):
            got += await receive(handle, 1)
            if len(got) % 40 == 0:
                time.sleep(0.12)  # the loop stalls: everything this consumer holds looks abandoned
        await asyncio.sleep(0.5)
        got += cast(list[RedisTimerExpired], handle.try_recv_events(10_000))
    received = [event.name for event in got]
    assert sorted(received) == names, [(event.name, event.attempt) for event in got if received.count(event.name) > 1]
    assert received == names


async def test_a_stop_during_a_batch_still_acknowledges_what_was_received(
    redis_server: RedisServer, namespace: str
) -> None:
    # The stop cancels the batch in flight; its acknowledgements were lost with it, so the received events
    # stayed pending and another consumer got them again after claim_after.
    async with client_of(redis_server) as client:
        manager, handle = TimerManager.new(
            namespace, 0, 64, 64, backend=RedisBackend(redis_server.url, namespace=namespace, ack="receive")
        )
        task = asyncio.ensure_future(manager.run())
        await handle.set_timers([(f"n{index}", 0.01) for index in range(5)])
        await handle.flush()
        link = manager._runner.store.link  # type: ignore[attr-defined]
        send = link._send_batch
        answered = asyncio.Event()

        async def unanswered(commands: Any, rearms: Any, acks: Any, checks: Any, done: Any, *more: Any) -> Any:
            if acks:
                await answered.wait()  # the server never answers this batch
            return await send(commands, rearms, acks, checks, done, *more)

        link._send_batch = unanswered
        await eventually(lambda: manager.stats().events_ready >= 5, "all five read")
        assert len(handle.try_recv_events(10)) == 5  # received at once: their acknowledgements go in one batch
        await asyncio.sleep(0.1)  # that batch is on its way
        assert await pending(client, namespace) >= 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, LIMIT)
        assert await pending(client, namespace) == 0


async def test_events_not_received_at_shutdown_go_to_another_manager_at_once(
    redis_server: RedisServer, namespace: str
) -> None:
    async with opened(redis_server.url, namespace, claim_after=0.4) as taker:
        async with opened(redis_server.url, namespace, claim_after=0.4, event_buffer_size=64) as leaver:
            await leaver.set_timers([(f"n{index}", 0.01) for index in range(50)])
            await asyncio.sleep(0.3)  # promoted, and read by one manager or the other
        got = await receive(taker, 50)  # the leaver handed back what it held
    assert sorted(event.name for event in got) == sorted(f"n{index}" for index in range(50))


async def test_events_not_received_at_shutdown_go_to_another_manager_at_once_with_the_default_claim_after(
    redis_server: RedisServer, namespace: str
) -> None:
    """The README promises that a stop hands the events read and not received to the other managers at once.
    The stopping manager made them claimable (their idle time set to claim_after), but the other managers'
    claimers look only every claim_after / 2: 15 s with the default claim_after of 30 s. Catches: a hand-back
    that tells no other manager."""
    async with AsyncExitStack() as leaving, AsyncExitStack() as taking:
        leaver = await leaving.enter_async_context(opened(redis_server.url, namespace, event_buffer_size=64))
        await leaver.set_timers([(f"n{index}", 0.01) for index in range(50)])
        await asyncio.sleep(0.3)  # promoted, and read by the leaver, the only manager so far
        taker = await taking.enter_async_context(opened(redis_server.url, namespace))
        await asyncio.sleep(0.1)
        await leaving.aclose()  # the leaver stops
        got: list[RedisTimerExpired] = []
        while len(got) < 50:
            got += await asyncio.wait_for(receive(taker, 1), 3.0)
    assert sorted(event.name for event in got) == sorted(f"n{index}" for index in range(50))


async def test_managers_sharing_a_namespace_each_get_a_share_and_together_all(
    redis_server: RedisServer, namespace: str
) -> None:
    names = [f"n{index}" for index in range(600)]
    async with (
        opened(redis_server.url, namespace) as a,
        opened(redis_server.url, namespace) as b,
        opened(redis_server.url, namespace) as c,
    ):
        handles = (a, b, c)
        for index, name in enumerate(names):
            handles[index % 3].try_set_timer(name, 0.05 + 0.0001 * index) if index % 50 else await handles[
                index % 3
            ].set_timer(name, 0.05 + 0.0001 * index)
        got: dict[int, list[str]] = {0: [], 1: [], 2: []}

        async def drain(position: int) -> None:
            while sum(map(len, got.values())) < len(names):
                try:
                    event = await asyncio.wait_for(handles[position].recv_event(), 0.3)
                except asyncio.TimeoutError:
                    continue
                assert event is not None
                got[position].append(event.name)

        await asyncio.wait_for(asyncio.gather(*(drain(position) for position in range(3))), LIMIT)
    everything = [name for share in got.values() for name in share]
    assert sorted(everything) == sorted(names)  # no loss, no duplicate


# ---------------------------------------------------------------------- payloads and input


class Reversed:
    """A serializer that is not JSON."""

    def dumps(self, value: Any) -> bytes:
        return json.dumps(value).encode()[::-1]

    def loads(self, raw: bytes) -> Any:
        return json.loads(raw[::-1])


async def test_payloads_round_trip_and_a_bad_one_is_refused_at_the_call(
    redis_server: RedisServer, namespace: str
) -> None:
    payloads = {"none": None, "bytes": b"\x00\xff|x", "str": "pipe|text é", "json": {"a": [1, 2.5, None]}, "int": 1}
    async with opened(redis_server.url, namespace) as handle:
        for name, payload in payloads.items():
            await handle.set_timer(name, 0.01, data=payload)
        with pytest.raises(TypeError, match="JSON-serializable"):
            await handle.set_timer("bad", 0.01, data=object())
        with pytest.raises(TypeError, match="JSON-serializable"):
            handle.try_set_timer("bad", 0.01, data={1, 2})
        with pytest.raises(TypeError, match="JSON-serializable"):
            await handle.set_timers([("ok", 0.01), ("bad", 0.01, float("nan"))])
        events = await receive(handle, len(payloads))
        assert await handle.get_pending_count() == 0  # nothing of the refused calls was queued
    assert {event.name: event.data for event in events} == payloads
    assert type(next(event.data for event in events if event.name == "bytes")) is bytes
    async with opened(redis_server.url, namespace + "s", serializer=Reversed()) as handle:
        await handle.set_timer("custom", 0.01, data={"k": "v"})
        assert (await receive(handle, 1))[0].data == {"k": "v"}


async def test_a_json_payload_holding_a_lone_surrogate_round_trips_as_a_str_one_does(
    redis_server: RedisServer, namespace: str
) -> None:
    """A str payload and a name travel as UTF-8 with lone surrogates let through (surrogatepass); a JSON payload
    holding the same str was encoded strictly and raised UnicodeEncodeError at the call (neither delivered nor
    refused with the TypeError the docs name). Catches: the JSON text encoded without surrogatepass."""
    payloads = {"str": "lone \udc80", "json": {"k": ["lone \udc80", "\ud83d"]}}
    async with opened(redis_server.url, namespace) as handle:
        for name, payload in payloads.items():
            await handle.set_timer(name, 0.01, data=payload)
        events = await receive(handle, len(payloads))
    assert {event.name: event.data for event in events} == payloads


async def test_the_synchronous_introspection_names_its_awaitable_form(
    redis_server: RedisServer, namespace: str
) -> None:
    async with opened(redis_server.url, namespace) as handle:
        await handle.set_timer("a", 10.0)
        for call, form in (
            (lambda: handle.deadline("a"), "get_deadline"),
            (lambda: handle.remaining("a"), "get_deadline"),
            (handle.pending_count, "get_pending_count"),
            (handle.next_deadline, "get_next_deadline"),
            (lambda: "a" in handle, "get_deadline"),
        ):
            with pytest.raises(TypeError, match=form):
                call()
        assert await handle.get_pending_count() == 1
        deadline = await handle.get_deadline("a")
        assert deadline is not None and deadline == await handle.get_next_deadline()
        assert abs(deadline - time.time() - 10.0) < 5.0
        assert await handle.get_deadline("missing") is None
        await handle.cancel_all_timers()
        assert await handle.get_pending_count() == 0
        assert await handle.get_next_deadline() is None


def test_backend_arguments_are_checked() -> None:
    with pytest.raises(TypeError, match="either a url or a client"):
        RedisBackend()
    with pytest.raises(ValueError, match="ack must be one of"):
        RedisBackend("redis://127.0.0.1:1/0", ack="sometimes")
    with pytest.raises(ValueError, match="claim_after"):
        RedisBackend("redis://127.0.0.1:1/0", claim_after=0)
    with pytest.raises(TypeError, match="namespace"):
        RedisBackend("redis://127.0.0.1:1/0", namespace="")
    with pytest.raises(ValueError, match="decode_responses"):
        RedisBackend(client=redis.asyncio.Redis(decode_responses=True))
    with pytest.raises(TypeError, match="dumps"):
        RedisBackend("redis://127.0.0.1:1/0", serializer=object())  # type: ignore[arg-type]


def test_importing_timer_manager_does_not_import_redis() -> None:
    code = "import sys, timer_manager; assert 'redis' not in sys.modules, sorted(sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True)


# ---------------------------------------------------------------------- the rest of the handle


async def test_repeating_timers_re_arm_when_received(redis_server: RedisServer, namespace: str) -> None:
    async with opened(redis_server.url, namespace) as handle:
        await handle.set_interval("tick", 0.03, data="t")
        with pytest.raises(ValueError, match="1 ms"):
            await handle.set_interval("fast", 0.0005)
        events = await receive(handle, 4)
        assert await handle.get_pending_count() == 1
        await handle.cancel_timer("tick")
        assert await handle.get_pending_count() == 0
    assert {event.data for event in events} == {"t"}
    gaps = [later.deadline - earlier.deadline for earlier, later in itertools.pairwise(events)]
    assert all(gap == pytest.approx(0.03, abs=0.0015) or gap > 0.03 for gap in gaps)


@asynccontextmanager
async def started(url: str, namespace: str, **options: Any) -> AsyncIterator[tuple[TimerManager, TimerHandle]]:
    """Like :func:`opened`, with the manager too (for its stats)."""
    max_timers = options.pop("max_timers", None)
    events = options.pop("event_buffer_size", 1024)
    heartbeat = options.pop("heartbeat_interval", 0)
    backend = RedisBackend(url, namespace=namespace, **options)
    manager, handle = TimerManager.new(namespace, heartbeat, 1024, events, backend=backend, max_timers=max_timers)
    task = asyncio.ensure_future(manager.run())
    try:
        yield manager, handle
    finally:
        await handle.shutdown()
        await asyncio.wait_for(task, LIMIT)


async def test_max_timers_is_enforced_on_the_server_for_the_whole_namespace(
    redis_server: RedisServer, namespace: str
) -> None:
    async with (
        started(redis_server.url, namespace, max_timers=5) as (first_manager, first),
        started(redis_server.url, namespace, max_timers=5) as (second_manager, second),
    ):
        await first.set_timers([(f"a{index}", 30.0) for index in range(4)])
        await first.flush()
        await second.set_timers([(f"b{index}", 30.0) for index in range(4)])  # one fits
        await second.set_timer("a0", 40.0)  # a reset is never refused
        await second.flush()
        assert await second.get_pending_count() == 5
        assert (first_manager.stats().refused, second_manager.stats().refused) == (0, 3)
        await first.cancel_all_timers()


async def test_stats_carry_the_servers_counts(redis_server: RedisServer, namespace: str) -> None:
    async with started(redis_server.url, namespace) as (manager, handle):
        await handle.set_timers([(f"n{index}", 0.01) for index in range(5)] + [("later", 60.0)])
        await receive(handle, 5)
        await handle.set_timer("nudge", 0.01)  # a promotion after the last receive reports the counts again
        await receive(handle, 1)
        stats = manager.stats()
        assert stats.live == 1  # "later"
        assert stats.fired == 6
        assert stats.backend_overdue == 0
        assert stats.backend_unacknowledged is not None and stats.backend_unacknowledged <= 6
        assert stats.set == 7 and stats.refused == 0


async def test_promotion_waits_for_the_heartbeat_tick(redis_server: RedisServer, namespace: str) -> None:
    # Ticks are Unix-aligned multiples of the heartbeat, the same grid for every manager of the namespace.
    heartbeat = 0.1
    async with (
        client_of(redis_server) as client,
        opened(redis_server.url, namespace, heartbeat_interval=heartbeat) as handle,
    ):
        for index in range(8):
            await handle.set_timer(f"n{index}", 0.013 * index + 0.01)
        for event in await receive(handle, 8):
            received_at = await server_time(client)
            tick = math.ceil(round(event.deadline * 1000) / 100) * 0.1  # the first tick at or after the deadline
            assert received_at >= tick - 0.0005


async def test_an_idle_manager_makes_no_calls_and_a_set_elsewhere_wakes_it(
    redis_server: RedisServer, namespace: str
) -> None:
    async with client_of(redis_server) as client, opened(redis_server.url, namespace) as handle:
        await handle.set_timer("warm", 0.01)
        await receive(handle, 1)
        await asyncio.sleep(0.2)
        before = await client.info("commandstats")
        await asyncio.sleep(1.5)
        after = await client.info("commandstats")
        calls = {name: after[name]["calls"] - before.get(name, {"calls": 0})["calls"] for name in after}
        calls.pop("cmdstat_info", None)
        assert sum(calls.values()) <= 2, calls  # nothing but (at most) a blocking read's renewal
        # Another process sets an earlier timer with the same script: the marker wakes this manager, whose
        # promoter otherwise sleeps for seconds.
        apply = client.register_script(APPLY)
        started_at = time.monotonic()
        command = b"s" + _field("elsewhere") + _field("20000") + _field("20000") + _payload(None)
        await apply(keys=namespace_keys(namespace), args=[0, "timers", command, b"", b""])  # see APPLY's arguments
        event = await receive(handle, 1)
        assert event[0].name == "elsewhere"
        assert time.monotonic() - started_at < 5.0  # unwoken, the promoter would sleep on for about 8 s more


async def test_threadsafe_calls_and_a_token_work_on_redis(redis_server: RedisServer, namespace: str) -> None:
    token = CancellationToken()
    backend = RedisBackend(redis_server.url, namespace=namespace)
    manager, handle = TimerManager.new(namespace, 0, 64, 64, token, backend=backend)
    task = asyncio.ensure_future(manager.run())
    threadsafe = handle.threadsafe()

    def body() -> None:
        for index in range(100):
            threadsafe.set_timer(f"n{index}", 0.02, data=index)

    thread = threading.Thread(target=body)
    thread.start()
    await asyncio.get_running_loop().run_in_executor(None, thread.join)
    events = await receive(handle, 100)
    assert sorted(event.data for event in events) == list(range(100))
    token.cancel()
    await asyncio.wait_for(task, LIMIT)
    with pytest.raises(ManagerClosed):
        await handle.set_timer("late", 1.0)


async def test_a_full_command_queue_pushes_back_and_loses_nothing(redis_server: RedisServer, namespace: str) -> None:
    async with opened(redis_server.url, namespace, command_buffer_size=8, event_buffer_size=8) as handle:
        refused = 0
        for index in range(40):
            try:
                handle.try_set_timer(f"n{index}", 0.01)
            except QueueFull:
                refused += 1
                await handle.set_timer(f"n{index}", 0.01)
        events = await receive(handle, 40)
    assert refused > 0
    assert sorted(event.name for event in events) == sorted(f"n{index}" for index in range(40))


async def test_while_the_event_queue_is_full_events_wait_in_redis_not_in_memory(
    redis_server: RedisServer, namespace: str
) -> None:
    async with (
        client_of(redis_server) as client,
        started(redis_server.url, namespace, event_buffer_size=4) as (
            manager,
            handle,
        ),
    ):
        await handle.set_timers([(f"n{index:03}", 0.01) for index in range(200)])

        async def all_promoted() -> bool:  # all due and promoted; nobody receives
            return await client.xlen(key(namespace, "ev")) >= 200

        await eventually(all_promoted, "200 events promoted")
        await asyncio.sleep(0.3)  # time for the reader to read more than it should
        engine = manager._runner.engine
        assert engine.ready_count() <= 4
        assert engine.pending_events() <= 4  # type: ignore[attr-defined]  # read from Redis, in this process
        assert await client.xlen(key(namespace, "ev")) == 200  # every event is in the stream
        received = [(await receive(handle, 1))[0].name for _ in range(200)]
    assert received == [f"n{index:03}" for index in range(200)]


def test_a_namespaces_keys_share_one_cluster_slot() -> None:
    # One hash tag: a namespace lives in one Redis Cluster slot, where multi-key scripts may run.
    for namespace in ("sessions", "a:b{c}", "ünï"):
        keys = namespace_keys(namespace)
        assert len(keys) == 7
        assert len({key_slot(name.encode()) for name in keys}) == 1


# ---------------------------------------------------------------------- the fast paths keep the semantics


def test_make_event_makes_the_same_event_as_the_dataclass() -> None:
    made = make_event("n", 1.5, b"data", 2, 7, "1-0", True)
    built = RedisTimerExpired("n", 1.5, b"data", attempt=2, generation=7, entry="1-0", repeating=True)
    assert made == built and hash(made) == hash(built) and repr(made) == repr(built)
    assert (made.entry, made.repeating) == (built.entry, built.repeating)
    assert type(made) is RedisTimerExpired
    with pytest.raises(AttributeError):
        made.name = "other"  # type: ignore[misc]  # still frozen


def test_events_read_behind_one_being_checked_wait_for_it_without_a_check_of_their_own() -> None:
    # A name with a command of this manager in flight makes its event go through the check on the server; the
    # events read after it need none (an unmarked entry read as new is current) but must not overtake it.
    from timer_manager._protocol import SET
    from timer_manager.redis._engine import RedisEngine

    engine = RedisEngine(64, 64, "receive")
    freed: list[int] = []
    engine.room_freed = lambda: freed.append(1)

    def event(name: str, entry: str) -> RedisTimerExpired:
        return make_event(name, 1.0, None, 1, 1, entry, False)

    engine.push(SET, "a", 5.0, None)
    engine.apply()  # "a" is sent to the server and not yet confirmed
    engine.begin_read()
    first = [event("a", "1-0"), event("b", "1-0")]
    engine.read_unread(first)
    assert engine.to_check == [first[0]]  # "b" waits, unchecked
    engine.begin_read()
    later = [event("c", "2-0")]
    engine.read_unread(later)
    assert engine.to_check == [first[0]]  # "c" too: behind "a"
    assert engine.fire(0.0, 0.0) == 0 and engine.pending_events() == 3
    checks, engine.to_check = engine.to_check, []
    engine.checked(checks, [0])  # "a" was stale: dropped (and counted off its entry), the others go on in order
    assert engine.fire(0.0, 0.0) == 2
    assert [taken.name for taken in engine.take_many(10)] == ["b", "c"]
    assert freed  # the dropped event made room for the reader
    assert sorted(engine.finished(engine.acks)) == ["1-0", "2-0"]  # every event of both entries acknowledged


def test_entry_events_make_the_events_make_event_makes() -> None:
    # The reader makes an entry's events in one call; each must be what make_event makes from the same fields.
    decoded: list[tuple[bytes, bytes]] = []

    def decode(name: bytes, payload: bytes) -> object:
        decoded.append((name, payload))
        return payload[1:].decode()

    fields = [b"a", b"1500|7|0||||n", "ü".encode(), b"2500|8|1000|1000|skip|2000|sdata|with|bars"]
    events = entry_events("5-0", fields, 2, decode)
    assert events == [
        make_event("a", 1.5, None, 2, 7, "5-0", False),
        make_event("ü", 2.5, "data|with|bars", 2, 8, "5-0", True),
    ]
    assert [(event.entry, event.repeating) for event in events] == [("5-0", False), ("5-0", True)]
    assert decoded == [("ü".encode(), b"sdata|with|bars")]  # not called for a set without data


async def _apply_at(client: redis.asyncio.Redis, namespace: str, items: list[tuple[str, int]]) -> None:
    """Set timers due at absolute Unix milliseconds, in order, with APPLY's ``a`` command."""
    command = b"".join(b"a" + _field(name) + _field(str(due)) + _field("0") + _payload(None) for name, due in items)
    await client.register_script(APPLY)(keys=namespace_keys(namespace), args=[0, "timers", command, b"", b""])


async def _group_and_now(client: redis.asyncio.Redis, namespace: str) -> int:
    """Make the namespace's stream and consumer group; return the server's time in ms."""
    await client.xgroup_create(key(namespace, "ev"), "timers", id="0", mkstream=True)
    return int(await server_time(client) * 1000)


async def _promote(client: redis.asyncio.Redis, namespace: str, *, pack: int | None = None) -> Any:
    """One PROMOTE of up to 1000 due events, heartbeat 0 (``pack``: events per stream entry, if given)."""
    args = [1000, 0] if pack is None else [1000, 0, pack]
    return await client.register_script(PROMOTE)(keys=namespace_keys(namespace), args=args)


async def _stream(client: redis.asyncio.Redis, namespace: str) -> list[tuple[str, int, int]]:
    """The stream's events in order: (name, due ms, generation)."""
    entries: Any = await client.xrange(key(namespace, "ev"))
    events = []
    for _, fields in entries:
        for name, value in fields.items():  # one field per event, in order
            due, gen = value.split(b"|")[:2]
            events.append((name.decode(), int(due), int(gen)))
    return events


async def test_a_promotion_takes_the_rest_of_its_last_millisecond(redis_server: RedisServer, namespace: str) -> None:
    # 600 timers in one millisecond, 900 in the next, all due: a PROMOTE of limit 1000 takes all 1500 at once (it
    # would otherwise stop before the second millisecond and read its first 400 for nothing), in set order.
    async with client_of(redis_server) as client:
        now_ms = await _group_and_now(client, namespace)
        items = [(f"z{index:04}", now_ms - 50) for index in range(600)]
        items += [(f"y{index:04}", now_ms - 49) for index in range(900)]
        await _apply_at(client, namespace, items)
        result = await _promote(client, namespace)
        assert int(result[0]) == 1500
        assert [name for name, _, _ in await _stream(client, namespace)] == [name for name, _ in items]


async def test_a_promotion_packs_consecutive_events_into_stream_entries(
    redis_server: RedisServer, namespace: str
) -> None:
    # 150 due events with pack 64: three entries (64, 64, 22), the order kept across them; each event's record in
    # "fired" names its entry.
    async with client_of(redis_server) as client:
        now_ms = await _group_and_now(client, namespace)
        items = [(f"e{index:03}", now_ms - 200 + index) for index in range(150)]
        await _apply_at(client, namespace, items)
        result = await _promote(client, namespace, pack=64)
        assert int(result[0]) == 150
        entries: Any = await client.xrange(key(namespace, "ev"))
        assert [len(fields) for _, fields in entries] == [64, 64, 22]
        assert [name for name, _, _ in await _stream(client, namespace)] == [name for name, _ in items]
        fired = await client.hgetall(key(namespace, "fired"))
        for entry, fields in entries:
            assert all(fired[name] == entry for name in fields)
        # the lateness of the batch comes as (ms late, count) runs, one per deadline here
        runs = [int(value) for value in result[6:]]
        assert sum(runs[1::2]) == 150 and set(runs[1::2]) == {1}


async def test_ties_go_by_generation_beyond_the_exact_range_of_a_double(
    redis_server: RedisServer, namespace: str
) -> None:
    # PROMOTE orders a batch by (due, generation) as single numbers when they fit a double exactly; with
    # generations near 10^14 and deadlines 200 ms apart they do not, and the order must still be exact.
    async with client_of(redis_server) as client:
        now_ms = await _group_and_now(client, namespace)
        await _apply_at(client, namespace, [("b", now_ms - 300)])  # generation 1
        await client.set(key(namespace, "seq"), 9 * 10**13)
        # In name order within a millisecond (as ZRANGE gives them) these are out of set order.
        later = [("a", now_ms - 300), ("r", now_ms - 100), ("q", now_ms - 100), ("p", now_ms - 100)]
        await _apply_at(client, namespace, later)
        result = await _promote(client, namespace)
        assert int(result[0]) == 5
        events = await _stream(client, namespace)
        assert [name for name, _, _ in events] == ["b", "a", "r", "q", "p"]
        assert [gen for _, _, gen in events] == [1, 9 * 10**13 + 1, 9 * 10**13 + 2, 9 * 10**13 + 3, 9 * 10**13 + 4]


async def test_the_promoter_wakes_on_the_tick_however_slow_its_replies(
    redis_server: RedisServer, namespace: str
) -> None:
    # The promoter's wait for the next tick is counted from when its PROMOTEs left, not from the replies: a reply
    # that takes 40 ms must not make every promotion 40 ms late. Timers due just before the 100 ms ticks.
    # On a loaded machine a call's way to the server varies by up to ~20 ms, so now and then a PROMOTE arrives
    # just before the tick, promotes nothing, and the next waits out the slow reply: that promotion is 45 ms
    # late. When the promoter counted from its last call alone, six of the ten were, beside two busy processes
    # (the median failed, 45 ms). The fault this catches makes every one of them 45 ms late or more, so the check
    # is that some (the three earliest) were on time.
    async with (
        client_of(redis_server) as client,
        started(redis_server.url, namespace, heartbeat_interval=0.1) as (manager, handle),
    ):
        await handle.flush()  # the manager runs: its link is there
        link = manager._runner.store.link  # type: ignore[attr-defined]
        promote = link._promote

        async def slow_promote(**options: Any) -> Any:
            result = await promote(**options)
            await asyncio.sleep(0.04)
            return result

        link._promote = slow_promote
        first_tick = math.ceil(await server_time(client) * 10 + 3) / 10
        for index in range(10):  # due 5 ms before a tick (exactly on it, a float may round to the next ms)
            await handle.set_timer_at(f"n{index}", first_tick + 0.1 * index - 0.005)
        await handle.flush()
        await receive(handle, 10)
        while len(manager._runner.engine.lateness_window()) < 10:  # the last reply may still be on its way
            await asyncio.sleep(0.01)
        late = sorted(manager._runner.engine.lateness_window())
    assert late[2] < 0.025, late  # 5 ms to the tick; a 40 ms reply used to add 40 ms to each


async def test_the_promoter_does_not_wake_before_the_tick_when_its_calls_take_longer_on_their_way_out(
    redis_server: RedisServer, namespace: str
) -> None:
    # The server reads its clock when a PROMOTE runs. A promoter that took that reading for the moment the call
    # left woke early by the call's way out, and when the next call went out faster it reached the server
    # before the tick, promoted nothing and cost a round trip more. Here every other PROMOTE waits 30 ms before
    # it is sent: counted from the last call, the promoter woke 30 ms early for every other tick (5 of the 10
    # PROMOTEs after the first promotion found nothing). From the least bound of the last second's calls it
    # wakes on the tick.
    async with started(redis_server.url, namespace, heartbeat_interval=0.1) as (manager, handle):
        await handle.flush()  # the manager runs: its link is there
        link = manager._runner.store.link  # type: ignore[attr-defined]
        promote = link._promote
        promoted: list[int] = []

        async def promote_slow_every_other_time(**options: Any) -> Any:
            if len(promoted) % 2:
                await asyncio.sleep(0.03)
            result = await promote(**options)
            promoted.append(int(result[0]))
            return result

        # In place before the first set: on a busy machine the sets could take longer than their lead, and the first
        # promotion would go uncounted.
        link._promote = promote_slow_every_other_time
        first_tick = math.ceil(time.time() * 10 + 6) / 10  # 0.5 s or more: the sets' lead, on a busy machine too
        for index in range(10):  # due 5 ms before a tick (exactly on it, a float may round to the next ms)
            await handle.set_timer_at(f"n{index}", first_tick + 0.1 * index - 0.005)
        await handle.flush()
        events = await receive(handle, 10)
        received = [(event.name, event.attempt) for event in events]
        assert sorted(name for name, _ in received) == [f"n{index}" for index in range(10)], received
        # The reader may hand over the last event before the promoter has read the reply of the PROMOTE that moved it
        # (another connection); the shutdown must not cut that reply off.
        await eventually(lambda: sum(promoted) >= 10, "the promoter's reply for the last promotion")
    from_first = promoted[next(index for index, count in enumerate(promoted) if count) :]
    assert sum(from_first) == 10, promoted
    # on a busy machine a call may still go out faster than every call of the last second: then one is empty
    assert from_first.count(0) <= 2, promoted


async def test_a_client_speaking_resp3_reads_events_too(redis_server: RedisServer, namespace: str) -> None:
    # The reader takes XREADGROUP's reply raw: a list of streams in RESP2, a map in RESP3.
    client = redis.asyncio.Redis.from_url(redis_server.url, protocol=3)
    try:
        backend = RedisBackend(client=client, namespace=namespace)
        async with TimerManager.open(namespace, heartbeat_interval=0, backend=backend) as handle:
            await handle.set_timer("a", 0.02, data={"x": 1})
            await handle.set_timer("b", 0.03)
            events = await receive(handle, 2)
    finally:
        await client.aclose()
    assert [(event.name, event.data) for event in events] == [("a", {"x": 1}), ("b", None)]


async def test_a_call_cut_short_that_ends_in_an_error_is_not_reported_as_never_retrieved() -> None:
    # At a stop, a read whose connection closed under it ended in ConnectionError after its cancellation:
    # asyncio then logged "Task exception was never retrieved" (2 runs in 5 of one short test).
    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: reported.append(context))

    async def closed_under_it() -> None:
        try:
            await asyncio.sleep(LIMIT)
        except asyncio.CancelledError:
            raise redis.ConnectionError("Connection closed by server.") from None

    link = SimpleNamespace(reconnect_timeout=1.0, _stopping=False, runner=SimpleNamespace(name="cut short"))
    call = asyncio.ensure_future(Link._call(link, closed_under_it))  # type: ignore[arg-type]
    await asyncio.sleep(0.01)
    link._stopping = True
    call.cancel()
    with pytest.raises((asyncio.CancelledError, redis.ConnectionError)):
        await call
    del call
    await asyncio.sleep(0.01)
    gc.collect()
    await asyncio.sleep(0.01)
    loop.set_exception_handler(None)
    assert [context["message"] for context in reported] == []


# ---------------------------------------------------------------------- batches longer than one APPLY call


async def test_a_touch_behind_a_full_batch_re_arms_a_timer_whose_event_waits_here(
    redis_server: RedisServer, namespace: str
) -> None:
    """A touch of a one-shot timer whose event waits in the event queue retracts that event here (its
    acknowledgement queued) and re-arms the timer on the server from the event's record. With more than one
    APPLY call's worth of commands queued before the touch, the acknowledgement must not reach the server in an
    earlier call than the touch: it would delete the event's record, and the touch would then find nothing to
    re-arm. Catches: acknowledgements shipped with the first batch of a split outbox."""
    async with opened(redis_server.url, namespace, command_buffer_size=4096) as handle:
        await handle.set_timer("x", 0.02, data="kept")
        await asyncio.sleep(0.3)  # promoted, read, and waiting in the event queue (not received)
        for index in range(1500):  # more than one APPLY call (BATCH = 1000) ahead of the touch
            handle.try_set_timer(f"filler{index}", 600.0)
        assert handle.touch("x") is True
        await handle.flush()
        # Re-armed on the server: pending, or (its duration is 20 ms, and a loaded machine may take longer to ask)
        # already due again. Either way its new event comes: the old one was retracted here and acknowledged.
        deadline = await handle.get_deadline("x")
        event = (await receive(handle, 1))[0]
        assert deadline is None or event.deadline == deadline
    assert (event.name, event.data) == ("x", "kept")


async def test_a_check_behind_a_full_batch_never_passes_an_event_a_later_set_retracts(
    redis_server: RedisServer, namespace: str
) -> None:
    """A set applied here before an event of its name is read makes that event suspect: it is checked on the
    server, and the check must come after the set there. With the set queued behind more than one APPLY call's
    worth of commands, a check sent with an earlier call finds the old event current and hands it over: a stale
    event, after the application reset the timer. Catches: checks shipped with the first batch of a split
    outbox."""
    async with opened(redis_server.url, namespace, event_buffer_size=1, command_buffer_size=16384) as handle:
        await handle.set_timer("a", 0.01)
        await handle.set_timer("x", 0.05)
        await asyncio.sleep(0.3)  # "a" fills the one-event queue; "x" is promoted and waits in the stream, unread
        for index in range(8000):  # several APPLY calls ahead of the reset
            handle.try_set_timer(f"filler{index}", 600.0)
        handle.try_set_timer("x", 600.0, data="new")
        assert [event.name for event in await receive(handle, 1)] == [
            "a"
        ]  # room: the reader reads the old "x", a suspect
        with pytest.raises(asyncio.TimeoutError):
            stale = await asyncio.wait_for(handle.recv_event(), 2.0)
            pytest.fail(f"a stale event after the reset: {stale!r}")
        await handle.flush()
        assert await handle.get_deadline("x") is not None


async def test_an_idle_manager_on_a_client_with_redis_pys_default_timeout_keeps_running(
    redis_server: RedisServer, namespace: str
) -> None:
    """redis-py 8's client has a socket timeout of 5 s by default, shorter than the link's blocking reads
    (XREADGROUP, BZPOPMIN: 10 s). On a client passed with those defaults, every idle read timed out, was taken
    for an unreachable server, and after reconnect_timeout the idle manager stopped with BackendUnavailable.
    Catches: blocking reads longer than the passed client's socket timeout."""
    client = redis.asyncio.Redis(host="127.0.0.1", port=redis_server.port)  # redis-py's defaults
    try:
        backend = RedisBackend(client=client, namespace=namespace, reconnect_timeout=2.0)
        manager, handle = TimerManager.new(namespace, 0, 64, 64, backend=backend)
        task = asyncio.ensure_future(manager.run())
        try:
            await handle.set_timer("before", 0.01)
            await receive(handle, 1)
            await asyncio.sleep(14.0)  # idle: longer than the blocking reads and reconnect_timeout together
            assert not task.done(), task.exception() if not task.cancelled() else "cancelled"
            await handle.set_timer("after", 0.01)
            assert [event.name for event in await receive(handle, 1)] == ["after"]
        finally:
            task.cancel()
            await asyncio.wait_for(asyncio.gather(task, return_exceptions=True), LIMIT)
    finally:
        await client.aclose()


# ---------------------------------------------------------------------- review: touch and re-arm after receive


@pytest.mark.parametrize("ack", ["next", "manual", "receive"])
async def test_a_touch_after_the_event_was_received_does_not_re_arm_it(
    redis_server: RedisServer, namespace: str, ack: str
) -> None:
    """Locally a one-shot timer whose event was received is no longer pending: a touch does nothing (as a
    reset finds an event already received). On Redis its ``fired`` record stays until the acknowledgement
    (the next receive, or ack()), and the touch re-armed it from that record: a second event."""
    async with opened(redis_server.url, namespace, ack=ack) as handle:
        await handle.set_timer("idle", 0.05, data="peer")
        (event,) = await receive(handle, 1)
        assert event.name == "idle"
        handle.touch("idle")
        await handle.flush()
        assert await handle.get_pending_count() == 0, "the touch re-armed a timer whose event was received"
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(handle.recv_event(), 0.3)


@pytest.mark.parametrize("ack", ["next", "manual"])
async def test_a_touch_from_another_manager_after_the_event_was_received_does_not_re_arm_it(
    redis_server: RedisServer, namespace: str, ack: str
) -> None:
    """As above, with the touch made by another manager of the namespace, once the receiving manager's next call
    to the server has gone (its flush): that manager cannot carry the receipt in its touch, so the server must know
    it. Until the acknowledgement (the next receive, or ack(); minutes later, perhaps) the event's ``fired`` record
    stayed as it was when the event was read, and the other manager's touch re-armed the timer from it: a second
    event of a timer already received."""
    async with opened(redis_server.url, namespace, ack=ack) as handle:
        await handle.set_timer("idle", 0.05, data="peer")
        (event,) = await receive(handle, 1)
        assert event.name == "idle"
        await handle.flush()  # the receipt reaches the server with the next call
        async with opened(redis_server.url, namespace) as other:
            other.touch("idle")
            await other.flush()
            assert await other.get_pending_count() == 0, "another manager's touch re-armed a received timer"
        with pytest.raises(asyncio.TimeoutError):
            again = await asyncio.wait_for(handle.recv_event(), 0.3)
            pytest.fail(f"a second event of a received timer: {again!r}")
        if ack == "manual":
            await handle.ack(event)
        await handle.flush()
    async with client_of(redis_server) as client:
        assert await client.hlen(key(namespace, "fired")) == 0


async def test_an_event_marked_received_by_a_consumer_that_stops_without_acknowledging_goes_to_another(
    redis_server: RedisServer, namespace: str
) -> None:
    """The receipt's mark (``r`` before the entry in ``fired``) must not hide the event from a takeover: a consumer
    that received it and stopped without acknowledging it (``ack="manual"``) leaves it to another, at least once."""
    async with opened(redis_server.url, namespace, ack="manual", claim_after=0.5) as first:
        await first.set_timer("once", 0.01, data="again")
        (event,) = await receive(first, 1)
        await first.flush()  # the mark is on the server
        async with client_of(redis_server) as client:
            assert await client.hget(key(namespace, "fired"), "once") == b"r" + event.entry.encode()
    async with opened(redis_server.url, namespace, ack="manual", claim_after=0.5) as second:
        (again,) = await receive(second, 1)
        assert (again.name, again.data, again.generation, again.attempt) == ("once", "again", event.generation, 2)
        await second.ack(again)
        await second.flush()
    async with client_of(redis_server) as client:
        assert await client.hlen(key(namespace, "fired")) == 0


# ---------------------------------------------------------------------- review: the consumer group's consumers


async def consumers(client: redis.asyncio.Redis, namespace: str) -> dict[str, int]:
    """The namespace's consumers (``XINFO CONSUMERS``): name -> pending entries."""
    found: Any = await client.xinfo_consumers(key(namespace, "ev"), "timers")
    return {
        (item["name"].decode() if isinstance(item["name"], bytes) else item["name"]): int(item["pending"])
        for item in found
    }


@pytest.mark.parametrize("ack", ["next", "manual", "receive"])
async def test_managers_that_stop_holding_nothing_leave_no_consumer_in_the_group(
    redis_server: RedisServer, namespace: str, ack: str
) -> None:
    """Five managers started and stopped one after the other (a service that restarts), each with a generated
    consumer name, then one named explicitly, each receiving an event (acknowledged before or at its stop): none
    holds anything at its stop, and none must be left in the group. Catches: every consumer name left in
    ``XINFO CONSUMERS`` for ever, a list that grows by one a restart."""
    for index in range(6):
        options: dict[str, Any] = {"ack": ack}
        if index == 5:
            options["consumer"] = "worker-1"  # a named consumer too: it reuses its name at its next start
        async with opened(redis_server.url, namespace, **options) as handle:
            await handle.set_timer(f"t{index}", 0.0)
            (event,) = await receive(handle, 1)
            if ack == "manual":
                await handle.ack(event)
            async with client_of(redis_server) as client:
                assert len(await consumers(client, namespace)) == 1  # this manager's, while it runs
    async with client_of(redis_server) as client:
        assert await consumers(client, namespace) == {}
        assert (await client.xpending(key(namespace, "ev"), "timers"))["pending"] == 0


async def test_a_consumer_that_stops_holding_an_event_stays_until_another_takes_it_over(
    redis_server: RedisServer, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A manager stops holding an event it received and did not acknowledge (``ack="manual"``): removing its
    consumer would drop the entry from the pending list (``XGROUP DELCONSUMER``), and no other consumer would
    ever get it. It stays, with its pending entry, until another consumer takes the event over; then the next
    manager that stops removes it (it holds nothing, and has not read for ``claim_after`` nor two blocking reads,
    here of 0.5 s), and itself. Catches: a consumer removed with its pending entries (the event lost), or one left
    for ever once emptied."""
    monkeypatch.setattr(_link, "BLOCK_SECONDS", 0.5)
    async with opened(redis_server.url, namespace, ack="manual", claim_after=0.3, consumer="first") as first:
        await first.set_timer("held", 0.0)
        (event,) = await receive(first, 1)
    async with client_of(redis_server) as client:
        assert await consumers(client, namespace) == {"first": 1}
    async with opened(redis_server.url, namespace, ack="manual", claim_after=0.3, consumer="second") as second:
        (again,) = await receive(second, 1)
        assert (again.name, again.generation, again.attempt) == ("held", event.generation, 2)
        await second.ack(again)
        async with client_of(redis_server) as client:
            assert await consumers(client, namespace) == {"first": 0, "second": 0}
        await asyncio.sleep(1.1)  # "first" idle for two blocking reads
    async with client_of(redis_server) as client:
        assert await consumers(client, namespace) == {}


async def test_a_cancel_all_that_drops_events_read_and_not_yet_ready_lets_the_reader_read_on(
    redis_server: RedisServer, namespace: str
) -> None:
    """The reader has filled the event queue's room with events read and checked, not yet moved into the event
    queue (the pass that moves them has not run); a cancel_all_timers() is applied before that pass (a receive
    applies what is queued first). It drops those events and frees their room. Catches: the room freed without
    telling the reader, which waited for room for good: a timer set afterwards fell due on the server and was
    never read, its receive hanging."""
    backend = RedisBackend(redis_server.url, namespace=namespace)
    manager, handle = TimerManager.new(namespace, 0, 16, 16, backend=backend)  # one event per stream entry
    run = asyncio.ensure_future(manager.run())
    try:
        await asyncio.wait_for(handle.flush(), LIMIT)
        engine = cast(RedisEngine, manager._runner.engine)
        read_unread = engine.read_unread
        armed, cancelled = asyncio.Event(), asyncio.Event()

        def cancel_all_on_a_full_read(events: list[RedisTimerExpired], marked: Any = ()) -> None:
            read_unread(events, marked)
            if events and armed.is_set() and not cancelled.is_set():  # the reader has filled the room with them
                assert engine.pending_events() == 16 and engine.ready_count() == 0, "all sixteen in one read"
                cancelled.set()
                handle.try_cancel_all_timers()  # queued before the pass that would move them into the event queue

        engine.read_unread = cancel_all_on_a_full_read  # type: ignore[method-assign]
        # The event queue filled, the reader waits for room; all taken at once, its next read asks for sixteen.
        await handle.set_timers([(f"warm{index:02}", 0.0) for index in range(16)])
        await eventually(lambda: engine.ready_count() == 16, "the event queue full")
        assert len(handle.try_recv_events(16)) == 16
        armed.set()
        async with client_of(redis_server) as client:  # set elsewhere: no command of this manager makes them suspect
            now_ms = int(await server_time(client) * 1000)
            await _apply_at(client, namespace, [(f"n{index:02}", now_ms) for index in range(16)])
        await asyncio.wait_for(cancelled.wait(), LIMIT)
        await asyncio.wait_for(handle.flush(), LIMIT)
        await handle.set_timer("after", 0.0)
        event = await asyncio.wait_for(handle.recv_event(), 5.0)
        assert event is not None and event.name == "after"
    finally:
        run.cancel()
        await asyncio.gather(run, return_exceptions=True)


async def test_a_touch_refused_under_max_timers_leaves_the_event_that_waits_here(
    redis_server: RedisServer, namespace: str
) -> None:
    """A one-shot timer's event waits in this manager's event queue, and the namespace is at max_timers; a touch of
    that timer asks to re-arm it, which the server refuses (no place is free), as a local touch at the limit does
    nothing and the event stays (tests/test_feature_limits.py). Catches: the event withdrawn and acknowledged here
    as the touch was sent, whatever the server made of it: the timer not re-armed and its event gone, lost."""
    async with started(redis_server.url, namespace, max_timers=2) as (manager, handle):
        await handle.set_timer("a", 0.0)
        engine = cast(RedisEngine, manager._runner.engine)
        await eventually(lambda: engine.ready_count() == 1, "a's event ready")
        await handle.set_timers([("b", 600.0), ("c", 600.0)])  # the namespace at max_timers
        await handle.flush()
        handle.touch("a")
        await handle.flush()
        assert manager.stats().refused == 1
        event = await asyncio.wait_for(handle.recv_event(), 5.0)
        assert event is not None and event.name == "a"


async def test_a_touch_refused_under_max_timers_after_its_events_check_left_leaves_the_event(
    redis_server: RedisServer, namespace: str
) -> None:
    """As above, with the event not yet in the event queue: read, and its check on the server on its way (held here)
    when the touch is applied. The check answers for the moment before the touch; the event is checked again after
    it, and handed over, the touch refused. Catches: the event dropped as a set's or cancel's retracts it (lost, the
    touch refused; checked by marking it so in place of the second check, and on the engine before the fix)."""
    async with started(redis_server.url, namespace, max_timers=2) as (manager, handle):
        await handle.flush()
        link = manager._runner.store.link  # type: ignore[attr-defined]
        send_batch = link._send_batch
        gate, holding = asyncio.Event(), asyncio.Event()

        async def held_while_it_checks(*arguments: Any) -> Any:
            if arguments[3] and not gate.is_set():  # a batch carrying checks: held before it leaves
                holding.set()
                await gate.wait()
            return await send_batch(*arguments)

        link._send_batch = held_while_it_checks
        await handle.set_timer("x", 0.0)  # set here while the reader waits: its event is checked after the read
        await asyncio.wait_for(holding.wait(), LIMIT)
        async with client_of(redis_server) as client:  # the namespace at max_timers (x's one-shot record is gone)
            now_ms = int(await server_time(client) * 1000)
            await _apply_at(client, namespace, [("b", now_ms + 600_000), ("c", now_ms + 600_000)])
        handle.touch("x")
        await asyncio.sleep(0)
        gate.set()
        await asyncio.wait_for(handle.flush(), LIMIT)
        assert manager.stats().refused == 1
        event = await asyncio.wait_for(handle.recv_event(), 5.0)
        assert event is not None and event.name == "x"
