"""Builds the Cython core. Where it cannot be compiled, the build fails and says what to do.

Set ``TIMER_MANAGER_NO_EXTENSIONS=1`` (read by the same rule as the import) to build without the
extension, on purpose: a pure-Python wheel (``py3-none-any``).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.errors import CCompilerError, ExecError, PlatformError, SetupError

HERE = Path(__file__).resolve().parent


def _load_env_rules():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("_timer_manager_env", HERE / "timer_manager" / "_env.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# The fix, in the error a failed build ends with (pip shows it without -v).
_REMEDY = (
    "Install a C compiler and the Python headers (Debian, Ubuntu: apt-get install gcc python3-dev; Fedora:\n"
    "dnf install gcc python3-devel; Alpine: apk add gcc musl-dev python3-dev; macOS: xcode-select --install;\n"
    "Windows: Microsoft C++ Build Tools) and install again, or set TIMER_MANAGER_NO_EXTENSIONS=1 to install\n"
    "the slower pure-Python core on purpose."
)


class BuildExt(build_ext):
    """Build the extension; where that fails, fail the build with the remedy rather than install pure Python.

    A silent fallback stuck: the wheel it made carried the platform tag, pip cached it, and reused it
    after a compiler was installed.
    """

    def run(self) -> None:
        # Cython writes the C file when an extension is built, not when setup.py is read: the sdist carries the
        # .pyx, never a generated C file, and a pure-Python build (or the sdist) runs no Cython at all.
        from Cython.Build import cythonize

        for extension in self.extensions:
            (cythonized,) = cythonize([extension], compiler_directives=_CYTHON_DIRECTIVES, quiet=True)
            extension.sources = cythonized.sources
        try:
            super().run()
        except (CCompilerError, ExecError, PlatformError) as exc:  # a compiler that failed, or none at all
            raise SetupError(f"timer_manager's compiled core could not be compiled: {_why(exc)}\n{_REMEDY}") from exc


def _why(exc: BaseException) -> str:
    """The failure in one line: the compiler's exit status (its own message is above), or what was missing."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, subprocess.CalledProcessError):
            command = cause.cmd[0] if isinstance(cause.cmd, list) else cause.cmd
            return f"{command!r} exited with status {cause.returncode} (its messages are above)."
        cause = cause.__cause__ or cause.__context__
    return f"{exc}."


def _debug_build() -> bool:
    return "-g" in os.environ.get("CFLAGS", "").split()


_CYTHON_DIRECTIVES = {"language_level": "3", "embedsignature": True}


def _extensions() -> list[Extension]:
    """The extension, its sources the .pyx (``BuildExt`` has Cython turn them into C)."""
    if _load_env_rules().no_extensions():
        print(
            "TIMER_MANAGER_NO_EXTENSIONS is set: building timer_manager as pure Python (py3-none-any).", file=sys.stderr
        )
        return []
    # Cython is a build requirement: without it (a build without isolation) say so here, rather than let
    # setuptools look for a C file that no one generated.
    import Cython.Build  # noqa: F401

    # One module for the table, the engine and the handle's touch (_core_c.pyx includes them), so that each
    # calls the C methods of the one below it directly.
    parts = ["_table_c.pxi", "_engine_c.pxi", "_handle_core_c.pxi", "_cpython.pxd", "_compat.pxd", "_compat.h"]
    extensions = [
        Extension(
            "timer_manager._core_c",
            ["timer_manager/_core_c.pyx"],
            depends=[f"timer_manager/{part}" for part in parts],
            # No debug information in the module that ships (1.1 MB with it, about 0.2 MB without); MSVC adds
            # none to a release build anyway. CFLAGS=-g keeps it, for a debugger or valgrind.
            extra_compile_args=[] if sys.platform == "win32" or _debug_build() else ["-g0"],
        )
    ]
    return extensions


setup(ext_modules=_extensions(), cmdclass={"build_ext": BuildExt})
