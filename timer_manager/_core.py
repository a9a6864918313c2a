"""Picks the compiled core (``_core_c``: the timer table, the engine that drives it and the handle's touch) or its
pure-Python twin (``_table_py``, ``_engine_py`` and ``_handle_core_py``).

The compiled module is used unless it is missing or ``TIMER_MANAGER_NO_EXTENSIONS`` is set to a true
value; ``CORE`` says which is live and ``CORE_REASON`` why. A missing extension is never silent: the
import warns (``RuntimeWarning``) unless the variable chose the pure-Python core. The type checker
always reads the pure-Python set.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

from ._env import NO_EXTENSIONS_VARIABLE, no_extensions

__all__ = ("CORE", "CORE_REASON", "Engine", "HandleCore", "TimerTable", "adopt_touch")

NO_EXTENSIONS = no_extensions()

if TYPE_CHECKING or NO_EXTENSIONS:
    from ._engine_py import Engine
    from ._handle_core_py import HandleCore, adopt_touch
    from ._table_py import TimerTable

    CORE = "python"
    CORE_REASON = f"{NO_EXTENSIONS_VARIABLE} is set"
else:
    try:
        from ._core_c import Engine, HandleCore, TimerTable, adopt_touch

        CORE = "cython"
        CORE_REASON = "the compiled extension timer_manager._core_c is installed"
    except ImportError as exc:  # pragma: no cover - only where the extension was not built
        from ._engine_py import Engine
        from ._handle_core_py import HandleCore, adopt_touch
        from ._table_py import TimerTable

        CORE = "python"
        if isinstance(exc, ModuleNotFoundError) and exc.name == "timer_manager._core_c":
            # A failed compile fails the build (setup.py): the extension was left out on purpose.
            CORE_REASON = (
                f"no compiled extension is installed: it was built with {NO_EXTENSIONS_VARIABLE}=1 (or pip "
                "reused such a build from its cache), or this is a source folder where it was not built"
            )
        else:
            CORE_REASON = f"the compiled extension could not be imported ({exc})"
        warnings.warn(
            f"timer_manager runs on its pure-Python core, which is slower: {CORE_REASON}. Where a C compiler "
            "works, rebuild it without pip's cached copy: pip install --no-cache-dir --force-reinstall "
            f"timer_manager. Or set {NO_EXTENSIONS_VARIABLE}=1 to choose the pure-Python core and silence "
            "this warning.",
            RuntimeWarning,
            stacklevel=2,
        )
