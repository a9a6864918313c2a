"""Fixtures for the benchmarks' smoke tests: the test suite's own (``tests/conftest.py``), so that a smoke
test that needs a redis-server, or builds a manager, gets them, and skips or fails, as the tests do."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent / "tests"
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

_spec = importlib.util.spec_from_file_location("_suite_conftest", TESTS / "conftest.py")
assert _spec is not None
assert _spec.loader is not None
_suite = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_suite)

redis_server = _suite.redis_server
default_core = _suite.default_core
