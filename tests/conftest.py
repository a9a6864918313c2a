"""Fixtures and hooks for the whole suite; the shared helpers are in ``support.py``.

Cores. The manager's core (its timer table and the engine driving it) comes in two twins: ``c``, the
compiled ``timer_manager._core_c``, and ``py``, ``_table_py`` with ``_engine_py``. A test that builds a
manager or a table asks for them (``propcache``'s model): it requests the ``core`` fixture (or
``table_class``), directly or with ``pytest.mark.usefixtures("core")`` (for a whole module:
``pytestmark = pytest.mark.usefixtures("core")``), and runs once per core, ids ``[c]`` and ``[py]``.
The ``c`` run is skipped when ``TIMER_MANAGER_NO_EXTENSIONS`` is set, and fails when the extension
is missing otherwise: never a silent fallback. Tests that build no manager (tokens, the engine
twins, which build both engines themselves, arguments refused before anything is built) request
neither, and run once. A test that builds a manager without requesting ``core`` fails, so that no
test silently runs on whichever core ``timer_manager._core`` picked; one about something else (the
README's examples) requests ``default_core`` to run once on that core, as a user gets it.

Event loops. Every async test runs on asyncio and, where installed, uvloop (ids ``[asyncio]``,
``[uvloop]``); virtual-time tests (looptime) run on asyncio's loop only.

Hypothesis. ``TIMER_MANAGER_HYPOTHESIS`` selects the profile of every property test: ``ci`` (the
default: 300 examples of up to 30 steps) or ``thorough`` (5000 examples of up to 80 steps, for
release checks), e.g. ``TIMER_MANAGER_HYPOTHESIS=thorough python -m pytest tests/test_model.py``.
"""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, cast

import pytest
from hypothesis import HealthCheck, settings
from redis_server import REDIS_SERVER, RedisCluster, RedisServer
from support import LOOP_FACTORIES, LOOPTIME, Core, load_core

import timer_manager
from timer_manager import _backend, _env

# ---------------------------------------------------------------------- Hypothesis

HYPOTHESIS_PROFILE_VARIABLE = "TIMER_MANAGER_HYPOTHESIS"
# ci: about 10 s per core for tests/test_model.py on an idle machine.
settings.register_profile(
    "ci",
    max_examples=300,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "thorough",
    max_examples=5000,
    stateful_step_count=80,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile(os.environ.get(HYPOTHESIS_PROFILE_VARIABLE) or "ci")

# ---------------------------------------------------------------------- cores


@pytest.fixture(params=[pytest.param("c", marks=pytest.mark.c_extension, id="c"), pytest.param("py", id="py")])
def core(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Core:
    """The core under test; managers created in the test are built on it."""
    kind: str = request.param
    if kind == "c" and _env.no_extensions():
        pytest.skip(f"{_env.NO_EXTENSIONS_VARIABLE} is set: the compiled core is not under test")
    try:
        chosen = load_core(kind)
    except ImportError as exc:  # no fallback: the compiled core must be there unless forbidden
        pytest.fail(
            f"the compiled core is not importable ({exc}): build it (python setup.py build_ext --inplace)"
            f" or set {_env.NO_EXTENSIONS_VARIABLE}=1 to test the pure-Python core only",
            pytrace=False,
        )
    monkeypatch.setattr(_backend, "TimerTable", chosen.TimerTable)
    monkeypatch.setattr(_backend, "Engine", chosen.Engine)
    return chosen


@pytest.fixture
def table_class(core: Core) -> Any:
    """The ``TimerTable`` class of the core under test."""
    return core.TimerTable


@pytest.fixture
def default_core() -> Core:
    """The core ``timer_manager`` picked on import (``timer_manager.CORE``), left in place: for a test that
    builds managers to check something other than the core, run once."""
    return load_core("c" if timer_manager.CORE == "cython" else "py")


@pytest.fixture(autouse=True)
def _managers_need_a_core(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail a test that builds a manager without requesting ``core`` (or ``default_core``)."""
    if {"core", "default_core"} & set(request.fixturenames):
        return
    nodeid = request.node.nodeid

    def refuse(*args: Any, **kwargs: Any) -> Any:
        pytest.fail(
            f"{nodeid} builds a manager but requests no core: add pytest.mark.usefixtures('core') to run"
            " it on both cores (see tests/conftest.py)",
            pytrace=False,
        )

    monkeypatch.setattr(_backend, "TimerTable", refuse)


# ---------------------------------------------------------------------- event loops and virtual time


@pytest.hookimpl(optionalhook=True)
def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> Mapping[str, Any]:
    """Run each async test once per event loop implementation."""
    return LOOP_FACTORIES


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip virtual-time tests where looptime is not installed."""
    if LOOPTIME:
        return
    skip = pytest.mark.skip(reason="looptime (virtual time) is not installed: it needs Python >= 3.11")
    for item in items:
        if item.get_closest_marker("looptime") is not None:
            item.add_marker(skip)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> Any:
    """Run every test not marked ``looptime`` on the stock asyncio loop class, as users get it.

    looptime's plugin re-classes every loop pytest-asyncio makes (it must, before knowing which test
    will use it), which changes ``loop.time``: the manager would then read the loop's clock through
    that method and wake through ``call_at``, never through its real-loop path (``time.monotonic``
    and the timerfd). Around unmarked tests the loop gets its own class back.
    """
    loop = _test_loop(pyfuncitem)
    patched: type | None = None
    selector: Any = None
    select: Any = None
    if LOOPTIME and loop is not None and pyfuncitem.get_closest_marker("looptime") is None:
        from looptime import LoopTimeEventLoop

        if issubclass(type(loop), LoopTimeEventLoop):
            patched = type(loop)
            stock = next(base for base in patched.__bases__ if not issubclass(base, LoopTimeEventLoop))
            loop.__class__ = cast("type[asyncio.AbstractEventLoop]", stock)
            # looptime also replaces the selector's select() on the instance.
            selector = getattr(loop, "_selector", None)
            select = vars(selector).pop("select", None) if selector is not None else None
    try:
        return (yield)
    finally:
        if patched is not None:
            assert loop is not None
            loop.__class__ = patched
            if select is not None:
                selector.select = select


def _test_loop(pyfuncitem: pytest.Function) -> asyncio.AbstractEventLoop | None:
    """The loop an async test runs on (None for a sync test)."""
    policy = cast("asyncio.AbstractEventLoopPolicy | None", pyfuncitem.funcargs.get("event_loop_policy"))
    if policy is None or pyfuncitem.get_closest_marker("asyncio") is None:
        return None
    with warnings.catch_warnings():
        # Python 3.12+ warns when a policy is asked for a loop that is not set.
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            loop: asyncio.AbstractEventLoop = policy.get_event_loop()
        except RuntimeError:
            return None
    return loop


# ---------------------------------------------------------------------- Redis


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A real redis-server of the session's own, on a free loopback port, stopped by pid at the end.

    Without ``redis-server`` on PATH the Redis tests are skipped, with how to get it; under ``CI=true`` they
    fail instead (``.ci/run`` installs it).
    """
    _require_redis_server()
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server for one test alone (which may stall, kill or reconfigure it), stopped by pid at its end;
    skipped or failed without ``redis-server`` as ``redis_server``. A module may override it (other options)."""
    _require_redis_server()
    server = RedisServer(tmp_path / "redis")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    """A real Redis Cluster of the session's own: three redis-server primaries on free loopback ports, the
    hash slots split between them, each stopped by pid at the end (skipped or failed as ``redis_server``)."""
    _require_redis_server()
    cluster = RedisCluster(tmp_path_factory.mktemp("redis-cluster"))
    try:
        yield cluster
    finally:
        cluster.stop()


def _require_redis_server() -> None:
    if REDIS_SERVER is None:
        message = "redis-server is not on PATH: apt-get install redis-server (Debian), brew install redis (macOS)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)


@pytest.fixture
def namespace(request: pytest.FixtureRequest) -> str:
    """A namespace no other test uses."""
    return f"{request.node.name}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def switch_interval(request: pytest.FixtureRequest) -> Iterator[float]:
    """Threads switch every ``request.param`` seconds during the test (parametrize it with
    ``indirect=True``); tiny intervals widen the races between threads."""
    old = sys.getswitchinterval()
    sys.setswitchinterval(request.param)
    try:
        yield request.param
    finally:
        sys.setswitchinterval(old)
