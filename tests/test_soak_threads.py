"""The threaded soak (``tests/soak_threads.py``): threads and tasks call one manager for a long time.

The normal run soaks for two seconds per table; the full ten-minute soak runs in soak mode::

    TIMER_MANAGER_SOAK=1 python -m pytest tests/test_soak_threads.py -m soak -s

or on its own, with its report printed: ``python tests/soak_threads.py --seconds 600 --table c``.
"""

from __future__ import annotations

import json

import pytest
from soak_threads import passed, run_thread_soak
from support import SOAK, Core


def test_short_threaded_soak(core: Core, caplog: pytest.LogCaptureFixture) -> None:
    """Two seconds of threads and tasks: nothing lost, duplicated or hung, and the accounting at zero. The
    library's log records (the small event queue fills often) are counted by the soak and kept out of pytest's
    capture, which keeps them all: over the ten-minute soak that alone failed its flat-memory check."""
    report = run_thread_soak(2.0, core.TimerTable)
    assert passed(report), json.dumps(report, indent=1)
    assert report["log_records"].get("WARNING", 0) > 0
    assert not [record for record in caplog.records if record.name == "timer_manager"]


@pytest.mark.soak
@pytest.mark.skipif(not SOAK, reason="the ten-minute threaded soak runs with TIMER_MANAGER_SOAK=1")
def test_ten_minute_threaded_soak(core: Core) -> None:
    """Ten minutes, with flat memory besides."""
    report = run_thread_soak(600.0, core.TimerTable)
    print(json.dumps(report, indent=1))
    assert passed(report), json.dumps(report, indent=1)
