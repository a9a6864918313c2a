"""Four processes share one namespace on a real redis-server, each with a random workload on its own names,
each receiving what the consumer group gives it; the logs are checked against a model of the contract:
no loss, no duplicate, no stale event, never early, and each consumer's events in (deadline, set) order."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from redis_server import RedisServer

pytestmark = pytest.mark.usefixtures("default_core")

WORKER = Path(__file__).with_name("redis_worker.py")
PROCESSES = 4
SECONDS = 3.0
SLACK = 0.002  # seconds: event deadlines are whole milliseconds of the server's clock, rounded up


def run_workers(url: str, namespace: str, seed: int) -> list[dict[str, Any]]:
    start = time.time() + 2.0  # time for every interpreter to start
    workers = [
        subprocess.Popen(
            [
                sys.executable,
                str(WORKER),
                url,
                namespace,
                str(index),
                repr(start),
                str(SECONDS),
                str(seed * 10 + index),
            ],
            stdout=subprocess.PIPE,
        )
        for index in range(PROCESSES)
    ]
    try:
        outputs = [worker.communicate(timeout=120)[0] for worker in workers]
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
    assert [worker.returncode for worker in workers] == [0] * PROCESSES
    return [json.loads(stdout) for stdout in outputs]


@pytest.mark.parametrize("seed", [10, 20])
def test_four_processes_on_one_namespace_keep_the_contract(
    redis_server: RedisServer, namespace: str, seed: int
) -> None:
    logs = run_workers(redis_server.url, namespace, seed)
    sets: dict[str, dict[str, Any]] = {}  # data id -> its set command
    superseded_by: dict[str, dict[str, Any]] = {}  # data id -> the next command on the same name
    final: dict[str, dict[str, Any]] = {}  # name -> its last command
    for log in logs:
        previous: dict[str, dict[str, Any]] = {}
        for command in log["commands"]:
            name = command["name"]
            if name in previous and previous[name]["op"] == "set":
                superseded_by[previous[name]["data"]] = command
            previous[name] = command
            if command["op"] == "set":
                sets[command["data"]] = command
        final.update(previous)
    received: dict[str, list[tuple[int, dict[str, Any]]]] = defaultdict(list)
    for log in logs:
        for event in log["events"]:
            received[event["data"]].append((log["index"], event))
    assert sets and sum(map(len, received.values())) > 100  # the workload did something

    for data, deliveries in received.items():
        assert data in sets, f"an event no set made: {data}"
        assert len(deliveries) == 1, f"delivered {len(deliveries)} times: {data}"  # no duplicate
        receiver, event = deliveries[0]
        command = sets[data]
        assert event["name"] == command["name"]
        # Never early: due no sooner than the call plus its duration, and handed over no sooner than due.
        assert event["deadline"] >= command["called"] + command["duration"] - SLACK
        assert event["at"] >= event["deadline"] - SLACK
        later = superseded_by.get(data)
        if later is not None:
            # No stale event: a timer replaced or cancelled (on the server) before its deadline never fires ...
            assert event["deadline"] <= later["applied_by"] + SLACK, f"stale: {data} fired after {later}"
            # ... and the process that replaced it never receives its event after the replacement was applied.
            if receiver == int(data.split(":")[0]):
                assert event["at"] <= later["applied_by"], f"stale: {data} received by its owner after {later}"

    for name, command in final.items():
        if command["op"] == "set":  # no loss: each timer still set at the end fired, exactly once
            assert len(received.get(command["data"], [])) == 1, f"lost: {name} {command['data']}"

    for log in logs:  # each consumer's events in (deadline, generation) order
        # Of the sets that reached the server before their deadline (a flush returned by then): one that arrives after
        # it, which a loaded machine makes of its shortest ones, is promoted as it arrives, after events of later
        # deadlines promoted meanwhile (docs/redis.md, "Order").
        keys = [
            (event["deadline"], event["generation"])
            for event in log["events"]
            if event["attempt"] == 1 and sets[event["data"]]["applied_by"] < event["deadline"] - SLACK
        ]
        assert keys == sorted(keys)
