"""One process of the shared-namespace test (``test_redis_processes.py``): a random workload on its own
names, receiving whatever events the consumer group gives it, with a log of both printed as JSON.

Run: ``python tests/redis_worker.py URL NAMESPACE INDEX START SECONDS SEED``; START is a Unix time to
begin at, so that every process works at once.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time
from typing import Any

from timer_manager import TimerManager
from timer_manager.redis import RedisBackend, RedisTimerExpired

NAMES = 30  # per process
LONGEST = 0.3  # seconds: the longest duration set


async def work(url: str, namespace: str, index: int, start: float, seconds: float, seed: int) -> dict[str, Any]:
    chooser = random.Random(seed)
    names = [f"p{index}-n{number}" for number in range(NAMES)]
    commands: list[dict[str, Any]] = []  # in call order
    events: list[dict[str, Any]] = []
    backend = RedisBackend(url, namespace=namespace, claim_after=60.0)
    async with TimerManager.open(namespace, heartbeat_interval=0, backend=backend) as handle:

        async def receive() -> None:
            while True:
                event = await handle.recv_event()
                if event is None:
                    return
                assert isinstance(event, RedisTimerExpired)
                events.append(
                    {
                        "name": event.name,
                        "data": event.data,
                        "deadline": event.deadline,
                        "generation": event.generation,
                        "attempt": event.attempt,
                        "at": time.time(),
                    }
                )

        receiver = asyncio.ensure_future(receive())
        await asyncio.sleep(max(0.0, start - time.time()))
        unflushed: list[dict[str, Any]] = []
        serial = 0
        while time.time() < start + seconds:
            name = chooser.choice(names)
            if chooser.random() < 0.8:
                serial += 1
                duration = chooser.uniform(0.01, LONGEST)
                command = {"op": "set", "name": name, "data": f"{index}:{serial}", "duration": duration}
                command["called"] = time.time()
                await handle.set_timer(name, duration, data=command["data"])
            else:
                command = {"op": "cancel", "name": name, "called": time.time()}
                await handle.cancel_timer(name)
            commands.append(command)
            unflushed.append(command)
            if chooser.random() < 0.2:
                await handle.flush()
                applied = time.time()
                for done in unflushed:
                    done["applied_by"] = applied
                unflushed = []
            await asyncio.sleep(chooser.uniform(0.0, 0.004))
        await handle.flush()
        applied = time.time()
        for done in unflushed:
            done["applied_by"] = applied
        # Every timer is due by now + LONGEST; the others receive theirs meanwhile.
        await asyncio.sleep(LONGEST + 1.5)
        receiver.cancel()
    return {"index": index, "commands": commands, "events": events}


if __name__ == "__main__":
    url, namespace, index, start, seconds, seed = sys.argv[1:]
    result = asyncio.run(work(url, namespace, int(index), float(start), float(seconds), int(seed)))
    print(json.dumps(result))
