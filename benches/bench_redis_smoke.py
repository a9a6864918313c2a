"""Smoke run of ``redis_bench.py`` in the normal test run, so that the Redis benchmark cannot rot.

Every workload of the Redis backend runs at a tiny size against the suite's redis-server (skipped
without one, as the Redis tests are), without the chart; the assertions are that every measurement
delivered the expected events and produced its figures. Nothing here asserts speed.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import redis_bench  # puts tests/ on sys.path too
from redis_server import RedisServer

# The suite's own fixtures (tests/conftest.py does not reach benches/): its redis-server, skipped without one
# (failed under CI=true) as the Redis tests are, and the core guard's default_core.
_spec = importlib.util.spec_from_file_location("_suite_conftest", redis_bench.HERE.parent / "tests" / "conftest.py")
assert _spec is not None
assert _spec.loader is not None
_suite = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_suite)
redis_server = _suite.redis_server
default_core = _suite.default_core


@pytest.mark.usefixtures("default_core")
def test_every_workload_of_the_redis_backend_delivers_the_expected_events(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    argv = ["--quick", "--url", redis_server.url, "--contenders", "ours", "--n", "2000", "--reset-n", "200"]
    argv += ["--memory-n", "5000", "--lateness-seconds", "0.5", "--no-chart", "--out", str(tmp_path)]
    status = redis_bench.main(argv)
    results = json.loads((tmp_path / "redis.json").read_text())
    failed = [r for r in results["records"] if r["check"] or r.get("error")]
    assert not failed, failed
    assert status == 0
    measured = {r["workload"] for r in results["records"] if r["metrics"]}
    assert measured == {"set-receive", "reset", "reset-large", "set-rate", "expiry-rate", "lateness", "memory"}
    assert all(target["passed"] is not None for target in results["targets"][:4]), results["targets"]


def test_a_contender_that_is_not_installed_is_skipped_saying_how_to_install_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = redis_bench.parse_args(["--quick", "--arq-python", "/nonexistent/python"])
    assert redis_bench.interpreter("arq", args) is None
    assert "pip install arq" in capsys.readouterr().out
