"""The one rule for reading ``TIMER_MANAGER_NO_EXTENSIONS``, shared by the build and the import.

``setup.py`` loads this file by path (the package is not importable before it is built), so it
must stay free of imports from the package.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

NO_EXTENSIONS_VARIABLE = "TIMER_MANAGER_NO_EXTENSIONS"
_TRUE_WORDS = frozenset({"1", "true", "yes", "on"})


def is_true(value: str | None) -> bool:
    """Return whether an environment value means "yes": ``1``, ``true``, ``yes`` or ``on``, any case."""
    return value is not None and value.strip().lower() in _TRUE_WORDS


def no_extensions(environ: Mapping[str, str] = os.environ) -> bool:
    """Return whether the environment forbids the compiled extension."""
    return is_true(environ.get(NO_EXTENSIONS_VARIABLE))
