"""Soak: many live timers and many mixed operations through the handle, under both tables.

The normal run does a short soak (10^4 timers, 10^5 operations). The full soak (10^6 live timers,
10^7 operations) runs only in soak mode::

    TIMER_MANAGER_SOAK=1 python -m pytest tests/test_soak.py -m soak -s

or on its own, with its figures printed: ``python tests/soak.py --table c`` (see ``tests/soak.py``).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

pytest.importorskip("looptime", reason="the soak runs in virtual time: looptime needs Python >= 3.11")

from soak import flat, run_soak
from support import SOAK

pytestmark = pytest.mark.usefixtures("core")


def _check(report: dict[str, Any], rss_slack_mb: float, traced_slack_mb: float) -> None:
    assert not report["problems"], report["problems"]
    assert report["received"] > 0
    assert report["received"] == report["fired"] - report["retracted"]
    ok, growth = flat(report["samples"], "traced_mb", skip=2, slack=traced_slack_mb)
    assert ok, f"tracemalloc grew {growth:.2f} MB after the working set was reached: {report['samples']}"
    ok, growth = flat(report["samples"], "rss_mb", skip=2, slack=rss_slack_mb)
    assert ok, f"RSS grew {growth:.1f} MB after the working set was reached: {report['samples']}"


def test_short_soak() -> None:
    report = run_soak(10_000, 100_000)
    _check(report, rss_slack_mb=16, traced_slack_mb=2)


@pytest.mark.soak
@pytest.mark.skipif(not SOAK, reason="the full soak runs with TIMER_MANAGER_SOAK=1")
def test_full_soak() -> None:
    report = run_soak(1_000_000, 10_000_000, checkpoints=20)
    print(json.dumps({k: v for k, v in report.items() if k != "problems"}, indent=1))
    _check(report, rss_slack_mb=64, traced_slack_mb=16)
