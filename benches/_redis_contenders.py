"""One measurement of one contender against a redis-server, run as a child process of ``redis_bench.py``.

    python benches/_redis_contenders.py CONTENDER WORKLOAD --url redis://127.0.0.1:PORT/0 [--n N ...]

prints one JSON line ``{"metrics": {...}, "check": null | "why the delivered events are wrong"}``.
This module imports only the standard library at the top, so that it runs under the arq and BullMQ
venvs too (their interpreters have neither timer_manager nor each other's packages); each contender
imports its library inside its own functions.

Contenders, each in its best reasonable usage for named timers:

* ``ours``: ``TimerManager.open(..., backend=RedisBackend(url))``; sets with ``try_set_timer`` (the
  manager pipelines them, up to 1000 per ``APPLY`` script call), receives with ``recv_events(1024)``; a
  reset is another ``try_set_timer`` of the name.
* ``arq``: a deferred job per timer, ``enqueue_job("fire", _job_id=name, _defer_by=delay)`` (arq's
  enqueue is WATCH/MULTI per job, so the calls run 100 at a time on its pool), and a ``Worker`` in the
  same process runs the job function (``max_jobs=100``, ``poll_delay`` 10 ms, ``keep_result=0``); a
  reset is ``Job(name).abort()`` (the only way arq cancels a deferred job; the worker must see it) then
  ``enqueue_job`` again under the same id.
* ``bullmq``: a delayed job per timer, added with ``Queue.addBulk`` in chunks of 1000 (one
  transaction each), ``removeOnComplete``; a ``Worker`` with ``concurrency=100`` (faster here than
  1000) processes them; a
  reset is BullMQ's debounce mode (``deduplication={"id": name, "ttl": delay, "extend": True,
  "replace": True}``), which replaces the delayed job by name inside the add script, so resets are
  batched with ``addBulk`` too.

Workloads:

* ``set-receive``: set ``n`` named timers whose delays spread evenly over ``window`` seconds, then
  receive them all; ``set_s`` ends when every set is applied on the server, ``total_s`` when the last
  timer was received.
* ``reset``: set ``n`` timers due in 60 s (``bytes_per_timer`` is Redis's ``used_memory`` growth per
  pending timer then), reset every one to a delay spread over ``window``, then receive them all;
  ``reset_s`` ends when every reset is applied. Each name must arrive once, at its new deadline.
* ``set-rate`` (ours): ``n`` sets of new names due in an hour, as fast as ``try_set_timer`` goes,
  until ``flush()`` says the server has applied them all.
* ``expiry-rate`` (ours): ``n`` timers all due within 0.1 s; the time from the first deadline until every
  event was promoted, read, received with ``recv_events(1024)`` and acknowledged (``ack="receive"``, then
  ``flush()``).
* ``lateness`` (ours): ``rate`` timers per second set for ``seconds`` seconds, each due ``delay`` after its
  set; lateness = receipt (Unix time) - deadline, of every event.
* ``memory`` (ours): ``n`` pending timers; ``used_memory`` growth per timer.

CPU: ``client_cpu_s`` is this process's user + system time over the measured phase
(``resource.getrusage``), ``server_cpu_s`` the server's (``INFO cpu``) over the same phase.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import Any

FAR = 60.0  # seconds: the first deadline of a timer that the reset workload resets
CHUNK = 1000  # sets per addBulk call (BullMQ)
CONCURRENCY = 100  # arq calls in flight at once
Metrics = dict[str, Any]


def name_of(index: int) -> str:
    return f"timer:{index:07d}"


def delays(n: int, window: float) -> list[float]:
    """Delays spread evenly over ``window`` seconds (the same for every contender)."""
    return [window * (index + 1) / n for index in range(n)]


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def server_cpu(client: Any) -> float:
    info = await client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


async def used_memory(client: Any) -> int:
    info = await client.info("memory")
    return int(info["used_memory"])


def percentiles(lateness: list[float]) -> Metrics:
    """p50 / p99 / max lateness in ms, and how many arrived before their deadline."""
    if not lateness:
        return {}
    ordered = sorted(lateness)
    return {
        "p50_ms": statistics.median(ordered) * 1e3,
        "p99_ms": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1e3,
        "max_ms": ordered[-1] * 1e3,
        "early": sum(1 for late in ordered if late < -0.001),  # the clocks' resolution is 1 ms
    }


def check_names(received: Iterable[str], n: int) -> str | None:
    """None when every name 0..n-1 arrived exactly once."""
    counts: dict[str, int] = {}
    for name in received:
        counts[name] = counts.get(name, 0) + 1
    missing = n - sum(1 for index in range(n) if name_of(index) in counts)
    duplicates = sum(count - 1 for count in counts.values() if count > 1)
    strangers = sum(1 for name in counts if not name.startswith("timer:"))
    if missing or duplicates or strangers:
        return f"{missing} missing, {duplicates} duplicated, {strangers} unknown names of {n}"
    return None


class Phase:
    """Wall, client CPU and server CPU of one measured phase."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.wall = 0.0
        self.cpu = 0.0
        self.server = 0.0

    async def start(self) -> None:
        self.server = await server_cpu(self.client)
        self.cpu = cpu()
        self.wall = time.perf_counter()

    async def stop(self, prefix: str, metrics: Metrics) -> None:
        wall = time.perf_counter() - self.wall
        client_cpu = cpu() - self.cpu
        metrics[f"{prefix}_s"] = wall
        metrics[f"{prefix}_client_cpu_s"] = client_cpu
        metrics[f"{prefix}_server_cpu_s"] = await server_cpu(self.client) - self.server


# ---------------------------------------------------------------------- ours


async def ours(workload: str, args: argparse.Namespace) -> tuple[Metrics, str | None]:
    import redis.asyncio

    from timer_manager import QueueFull, TimerManager
    from timer_manager.redis import RedisBackend

    client = redis.asyncio.Redis.from_url(args.url)
    metrics: Metrics = {}
    check: str | None = None
    backend = RedisBackend(args.url, namespace="bench", ack=args.ack)
    options: dict[str, Any] = {"command_buffer_size": args.command_buffer, "event_buffer_size": args.event_buffer}
    n = args.n
    try:
        async with TimerManager.open("bench", heartbeat_interval=args.heartbeat, backend=backend, **options) as handle:

            async def set_all(items: Iterable[tuple[str, float]]) -> None:
                for name, delay in items:
                    try:
                        handle.try_set_timer(name, delay)
                    except QueueFull:
                        await handle.set_timer(name, delay)
                await handle.flush()

            async def receive(count: int, lateness: list[float], names: list[str]) -> None:
                while len(names) < count:
                    events = await handle.recv_events(1024)
                    now = time.time()
                    for event in events:
                        names.append(event.name)
                        lateness.append(now - event.deadline)

            phase = Phase(client)
            lateness: list[float] = []
            names: list[str] = []
            if workload == "set-receive":
                await phase.start()
                receiver = asyncio.ensure_future(receive(n, lateness, names))
                await set_all(zip(map(name_of, range(n)), delays(n, args.window), strict=True))
                metrics["set_s"] = time.perf_counter() - phase.wall
                await receiver
                await handle.flush()  # the last acknowledgements applied
                await phase.stop("total", metrics)
                check = check_names(names, n)
            elif workload == "reset":
                before = await used_memory(client)
                await set_all((name_of(index), FAR) for index in range(n))
                metrics["bytes_per_timer"] = (await used_memory(client) - before) / n
                await phase.start()
                receiver = asyncio.ensure_future(receive(n, lateness, names))
                await set_all(zip(map(name_of, range(n)), delays(n, args.window), strict=True))
                await phase.stop("reset", metrics)
                await receiver
                metrics["total_s"] = time.perf_counter() - phase.wall
                check = check_names(names, n)
                if check is None and any(late > FAR / 2 for late in lateness):
                    check = "an event came at its first deadline, not the reset one"
            elif workload in ("set-rate", "memory"):
                before = await used_memory(client)
                await phase.start()
                await set_all((name_of(index), 3600.0) for index in range(n))
                await phase.stop("set", metrics)
                metrics["sets_per_s"] = n / metrics["set_s"]
                pending = await handle.get_pending_count()
                metrics["bytes_per_timer"] = (await used_memory(client) - before) / n
                if pending != n:
                    check = f"{pending} timers pending on the server after {n} sets"
                await handle.cancel_all_timers()
                await handle.flush()
            elif workload == "expiry-rate":
                seconds, micros = await client.time()
                due = seconds + micros / 1e6 + args.lead
                for index in range(n):  # due within 0.1 s (one millisecond would be one huge promotion)
                    name, when = name_of(index), due + 0.1 * index / n
                    try:
                        handle.try_set_timer_at(name, when)
                    except QueueFull:
                        await handle.set_timer_at(name, when)
                await handle.flush()
                seconds, micros = await client.time()
                metrics["set_before_due_s"] = due - (seconds + micros / 1e6)
                await asyncio.sleep(max(0.0, metrics["set_before_due_s"] - 0.05))
                await phase.start()
                await receive(n, lateness, names)
                await handle.flush()  # with ack="receive": every acknowledgement applied
                ended = time.time()
                await phase.stop("drain", metrics)
                metrics["expiries_per_s"] = n / (ended - due)
                check = check_names(names, n)
                if check is None and metrics["set_before_due_s"] <= 0:
                    check = "the timers were not all set before they were due: lengthen --lead"
            elif workload == "lateness":
                total = int(args.rate * args.seconds)
                receiver = asyncio.ensure_future(receive(total, lateness, names))
                await phase.start()
                sent = 0
                while sent < total:
                    target = min(total, int((time.perf_counter() - phase.wall) * args.rate) + 1)
                    while sent < target:
                        try:
                            handle.try_set_timer(name_of(sent), args.delay)
                        except QueueFull:
                            await handle.set_timer(name_of(sent), args.delay)
                        sent += 1
                    await asyncio.sleep(0.001)
                await receiver
                await phase.stop("run", metrics)
                metrics["timers"] = total
                check = check_names(names, total)
            else:
                raise SystemExit(f"ours: no workload {workload!r}")
            metrics.update(percentiles(lateness))
        if workload in ("set-receive", "reset", "expiry-rate"):  # the manager has stopped: all acknowledged?
            metrics["unacked"] = await pending_entries(client)
    finally:
        await client.aclose()
    if check is None and metrics.get("unacked"):
        check = f"{metrics['unacked']} events left unacknowledged in the stream"
    return metrics, check


async def pending_entries(client: Any) -> int:
    """Entries the consumer group read and did not acknowledge (``ack="next"`` leaves the last batch's)."""
    groups = await client.xinfo_groups("{tm:bench}:ev")
    return sum(int(group["pending"]) for group in groups) if groups else 0


# ---------------------------------------------------------------------- arq


async def arq(workload: str, args: argparse.Namespace) -> tuple[Metrics, str | None]:
    from arq.connections import RedisSettings, create_pool
    from arq.jobs import Job
    from arq.worker import Worker, func

    settings = RedisSettings.from_dsn(args.url)
    pool = await create_pool(settings)
    n = args.n
    names: list[str] = []
    lateness: list[float] = []
    done = asyncio.Event()
    expected = [n]

    async def fire(ctx: dict[str, Any], name: str) -> None:
        lateness.append(time.time() - ctx["score"] / 1000.0)
        names.append(name)
        if len(names) >= expected[0]:
            done.set()

    worker = Worker(
        functions=[func(fire, name="fire")],
        redis_pool=pool,
        max_jobs=args.arq_max_jobs,
        poll_delay=0.01,
        keep_result=0,
        allow_abort_jobs=True,
        handle_signals=False,
        log_results=False,
    )
    running = asyncio.ensure_future(worker.async_run())

    async def bounded(calls: list[Callable[[], Awaitable[Any]]]) -> list[Any]:
        """The calls, CONCURRENCY at a time: a few workers taking from one iterator (a gather of 10^5 tasks
        waiting on one semaphore starved arq's worker here: it started no job until they were all done)."""
        results: list[Any] = [None] * len(calls)
        todo = iter(enumerate(calls))

        async def work() -> None:
            for index, call in todo:
                results[index] = await call()

        await asyncio.gather(*(work() for _ in range(CONCURRENCY)))
        return results

    def enqueue(name: str, delay: float) -> Callable[[], Awaitable[Any]]:
        return lambda: pool.enqueue_job("fire", name, _job_id=name, _defer_by=delay)

    metrics: Metrics = {}
    check: str | None = None
    phase = Phase(pool)
    try:
        if workload == "set-receive":
            await phase.start()
            queued = await bounded([enqueue(name_of(i), d) for i, d in enumerate(delays(n, args.window))])
            metrics["set_s"] = time.perf_counter() - phase.wall
            await done.wait()
            await phase.stop("total", metrics)
            refused = sum(1 for job in queued if job is None)
            check = check_names(names, n) or (f"{refused} enqueues refused" if refused else None)
        elif workload == "reset":
            before = await used_memory(pool)
            await bounded([enqueue(name_of(i), FAR) for i in range(n)])
            metrics["bytes_per_timer"] = (await used_memory(pool) - before) / n

            def reset(name: str, delay: float) -> Callable[[], Awaitable[Any]]:
                async def call() -> Any:
                    # abort() waits for the worker to drop the job (it polls for the result; with
                    # keep_result=0 it ends with "not found", which is the job gone); then the id is free.
                    await Job(name, pool).abort()
                    return await pool.enqueue_job("fire", name, _job_id=name, _defer_by=delay)

                return call

            await phase.start()
            queued = await bounded([reset(name_of(i), d) for i, d in enumerate(delays(n, args.window))])
            await phase.stop("reset", metrics)
            await done.wait()
            metrics["total_s"] = time.perf_counter() - phase.wall
            refused = sum(1 for job in queued if job is None)
            check = check_names(names, n) or (f"{refused} re-enqueues refused" if refused else None)
            if check is None and any(late > FAR / 2 for late in lateness):
                check = "an event came at its first deadline, not the reset one"
        else:
            raise SystemExit(f"arq: no workload {workload!r}")
        metrics.update(percentiles(lateness))
    finally:
        running.cancel()
        await asyncio.gather(running, *worker.tasks.values(), return_exceptions=True)
        await pool.aclose()
    return metrics, check


# ---------------------------------------------------------------------- BullMQ


async def bullmq(workload: str, args: argparse.Namespace) -> tuple[Metrics, str | None]:
    import redis.asyncio
    from bullmq import Queue, Worker

    client = redis.asyncio.Redis.from_url(args.url)
    queue = Queue("bench", {"connection": args.url})
    n = args.n
    names: list[str] = []
    lateness: list[float] = []
    done = asyncio.Event()

    async def process(job: Any, token: str) -> None:
        lateness.append(time.time() - (job.timestamp + job.delay) / 1000.0)
        names.append(job.data["n"])
        if len(names) >= n:
            done.set()

    def jobs(items: Iterable[tuple[str, float]]) -> list[dict[str, Any]]:
        made = []
        for name, delay in items:
            delay_ms = max(1, round(delay * 1000))
            dedup = {"id": name, "ttl": delay_ms, "extend": True, "replace": True}
            opts = {"delay": delay_ms, "removeOnComplete": True, "deduplication": dedup}
            made.append({"name": "fire", "data": {"n": name}, "opts": opts})
        return made

    async def add_all(items: list[tuple[str, float]]) -> None:
        for start in range(0, len(items), CHUNK):
            await queue.addBulk(jobs(items[start : start + CHUNK]))

    worker: Any = None
    metrics: Metrics = {}
    check: str | None = None
    phase = Phase(client)
    try:
        if workload == "set-receive":
            worker = Worker("bench", process, {"connection": args.url, "concurrency": args.bullmq_concurrency})
            await phase.start()
            await add_all(list(zip(map(name_of, range(n)), delays(n, args.window), strict=True)))
            metrics["set_s"] = time.perf_counter() - phase.wall
            await done.wait()
            await phase.stop("total", metrics)
            check = check_names(names, n)
        elif workload == "reset":
            before = await used_memory(client)
            await add_all([(name_of(index), FAR) for index in range(n)])
            metrics["bytes_per_timer"] = (await used_memory(client) - before) / n
            worker = Worker("bench", process, {"connection": args.url, "concurrency": args.bullmq_concurrency})
            await phase.start()
            await add_all(list(zip(map(name_of, range(n)), delays(n, args.window), strict=True)))
            await phase.stop("reset", metrics)
            await done.wait()
            metrics["total_s"] = time.perf_counter() - phase.wall
            check = check_names(names, n)
            delayed = await queue.getDelayedCount()
            if check is None and delayed:
                check = f"{delayed} jobs still delayed after every reset one was received: a reset added, not replaced"
        else:
            raise SystemExit(f"bullmq: no workload {workload!r}")
        metrics.update(percentiles(lateness))
    finally:
        if worker is not None:
            await worker.close(force=True)
        await queue.close()
        await client.aclose()
    return metrics, check


# ---------------------------------------------------------------------- entry point

RUNNERS: dict[str, Callable[[str, argparse.Namespace], Coroutine[Any, Any, tuple[Metrics, str | None]]]] = {
    "ours": ours,
    "arq": arq,
    "bullmq": bullmq,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("contender", choices=sorted(RUNNERS))
    parser.add_argument("workload")
    parser.add_argument("--url", required=True)
    parser.add_argument("--n", type=int, default=10**5)
    parser.add_argument("--window", type=float, default=1.0, help="delays spread over this many seconds")
    parser.add_argument("--heartbeat", type=float, default=0.01)
    parser.add_argument("--ack", default="next", help="ours: RedisBackend(ack=...)")
    parser.add_argument("--command-buffer", type=int, default=16384, help="ours: command_buffer_size")
    parser.add_argument("--event-buffer", type=int, default=4096, help="ours: event_buffer_size")
    parser.add_argument("--bullmq-concurrency", type=int, default=100, help="bullmq: Worker concurrency")
    parser.add_argument("--arq-max-jobs", type=int, default=100, help="arq: Worker max_jobs")
    parser.add_argument("--lead", type=float, default=5.0, help="expiry-rate: seconds from the first set to due")
    parser.add_argument("--rate", type=float, default=10_000.0, help="lateness: timers set per second")
    parser.add_argument("--seconds", type=float, default=5.0, help="lateness: how long")
    parser.add_argument("--delay", type=float, default=0.2, help="lateness: each timer's duration")
    args = parser.parse_args(argv)
    metrics, check = asyncio.run(RUNNERS[args.contender](args.workload, args))
    sys.stdout.write(json.dumps({"metrics": metrics, "check": check}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
