"""Picks the compiled core (``_core_c``: the timer table and the engine that drives it) or its pure-Python
twin (``_table_py`` and ``_engine_py``).

The compiled module is used unless it is missing or ``TIMER_MANAGER_NO_EXTENSIONS`` is set to a true
value; ``CORE`` says which is live. The type checker always reads the pure-Python pair.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._env import no_extensions

__all__ = ("CORE", "Engine", "TimerTable")

NO_EXTENSIONS = no_extensions()

if TYPE_CHECKING or NO_EXTENSIONS:
    from ._engine_py import Engine
    from ._table_py import TimerTable

    CORE = "python"
else:
    try:
        from ._core_c import Engine, TimerTable

        CORE = "cython"
    except ImportError:  # pragma: no cover - only where the extension was not built
        from ._engine_py import Engine
        from ._table_py import TimerTable

        CORE = "python"
