"""Picks the timer table: the Cython one unless it is missing or forbidden by the environment."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._env import no_extensions

__all__ = ("CORE", "TimerTable")

NO_EXTENSIONS = no_extensions()

if TYPE_CHECKING or NO_EXTENSIONS:
    from ._table_py import TimerTable

    CORE = "python"
else:
    try:
        from ._table_c import TimerTable

        CORE = "cython"
    except ImportError:  # pragma: no cover - only where the extension was not built
        from ._table_py import TimerTable

        CORE = "python"
