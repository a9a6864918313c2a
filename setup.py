"""Builds the Cython timer table; falls back to pure Python, with a warning, where no compiler works.

Set ``TIMER_MANAGER_NO_EXTENSIONS=1`` (read by the same rule as the import) to skip the extension.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = Path(__file__).resolve().parent


def _load_env_rules():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("_timer_manager_env", HERE / "timer_manager" / "_env.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class OptionalBuildExt(build_ext):
    """Build the extension, but let the install succeed as pure Python where compiling fails."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:
            self._warn(exc)

    def build_extension(self, ext: Extension) -> None:
        try:
            super().build_extension(ext)
        except Exception as exc:
            self._warn(exc)

    @staticmethod
    def _warn(exc: BaseException) -> None:
        bar = "*" * 78
        print(
            f"\n{bar}\nWARNING: the timer_manager Cython extension could not be compiled ({exc!r}).\n"
            "timer_manager is installed as pure Python (timer_manager.CORE == 'python'): it works,\n"
            f"but its timer table is slower.\n{bar}\n",
            file=sys.stderr,
        )


def _debug_build() -> bool:
    return "-g" in os.environ.get("CFLAGS", "").split()


def _extensions() -> list[Extension]:
    if _load_env_rules().no_extensions():
        print("TIMER_MANAGER_NO_EXTENSIONS is set: building timer_manager as pure Python.", file=sys.stderr)
        return []
    from Cython.Build import cythonize

    # One module for the table and the engine (_core_c.pyx includes both), so that the engine calls the
    # table's C methods directly.
    parts = ["_table_c.pxi", "_engine_c.pxi", "_cpython.pxd", "_compat.pxd", "_compat.h"]
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
    return cythonize(
        extensions,
        compiler_directives={"language_level": "3", "embedsignature": True},
        quiet=True,
    )


setup(ext_modules=_extensions(), cmdclass={"build_ext": OptionalBuildExt})
