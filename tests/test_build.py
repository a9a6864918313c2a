"""Building from source where the compiled core cannot be compiled: the build fails and says what to do, unless
``TIMER_MANAGER_NO_EXTENSIONS=1`` asks for the pure-Python wheel, which then says what it is once installed. And
what the distributions hold: the wheel every module of the package (subpackages included) with its typing
files, the sdist every file a user needs to build, test and read the package, each without build junk.

Each test builds a wheel as pip does (``pip wheel``, without build isolation, so with this environment's Cython
and setuptools: the `test` extra installs them) from a copy of the source files in a temporary folder, so that
no earlier build's products are reused. They need the source tree: where the suite runs against an installed
wheel (cibuildwheel, the sdist check), there is none and they are skipped.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tarfile
import venv
import zipfile
from pathlib import Path

import pytest

import timer_manager

ROOT = Path(__file__).absolute().parent.parent
VARIABLE = "TIMER_MANAGER_NO_EXTENSIONS"
# What a wheel is built from: the package and its build files, and what MANIFEST.in names (pyproject.toml names
# the README and the licence), as a clone holds them.
SOURCES: tuple[str, ...] = ("setup.py", "pyproject.toml", "MANIFEST.in", "README.md", "LICENSE", "CHANGES.md")
SOURCES += ("timer_manager", "docs", "tests", "benches")


def _missing() -> str | None:
    """Why these tests cannot run here, or None."""
    if not all((ROOT / name).exists() for name in SOURCES):
        return f"no source tree at {ROOT} (the suite runs against an installed wheel)"
    if sys.platform == "win32":
        return "CC does not choose the compiler of an MSVC build"
    for module in ("Cython", "setuptools", "pip"):
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed (the `test` extra installs it): the build needs it"
    return None


MISSING = _missing()
if MISSING is not None and os.environ.get("CI") == "true" and "no source tree" not in MISSING:
    raise RuntimeError(f"tests/test_build.py must run in CI: {MISSING}")
pytestmark = pytest.mark.skipif(MISSING is not None, reason=MISSING or "")


def _source_copy(folder: Path) -> Path:
    """The files a wheel is built from, without build products (a compiled module, generated C, a build folder)."""
    src = folder / "src"
    src.mkdir()
    junk = shutil.ignore_patterns("*.so", "*.pyd", "*.c", "__pycache__", "build", "*.egg-info")
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name, ignore=junk)
        else:
            shutil.copy2(ROOT / name, src / name)
    return src


def _build_wheel(
    folder: Path, *, verbose: bool = False, **env: str | None
) -> tuple[subprocess.CompletedProcess[str], list[Path]]:
    """``pip wheel`` (not verbose: what a user sees; verbose: the build's own output too) of a fresh source copy;
    the result and the wheels made."""
    environ = {key: value for key, value in os.environ.items() if key not in (VARIABLE, "CC", "CFLAGS")}
    for key, value in env.items():
        if value is None:
            environ.pop(key, None)
        else:
            environ[key] = value
    out = folder / "wheels"
    command = [sys.executable, "-m", "pip", "wheel", "--no-build-isolation", "--no-deps", "--no-index"]
    command += ["--no-cache-dir", "--wheel-dir", str(out), str(_source_copy(folder))] + ["-v"] * verbose
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False, env=environ)
    return result, sorted(out.glob("*.whl")) if out.exists() else []


def _compiler_free_path(folder: Path) -> str:
    """A PATH with no C compiler on it (an empty folder)."""
    empty = folder / "empty-bin"
    empty.mkdir()
    return str(empty)


@pytest.mark.parametrize(
    ("setting", "says"),
    [("CC=false", "'false' exited with status 1"), ("no compiler on PATH", "No such file or directory")],
)
def test_a_build_without_a_working_compiler_fails_and_names_the_fix(setting: str, says: str, tmp_path: Path) -> None:
    """A compiler that fails (``CC=false``) or is missing (a PATH without one): the build fails, makes no
    wheel, and its last words, which pip shows without ``-v``, say why and what to do. catches: the
    silent pure-Python fallback whose platform-tagged wheel pip cached and kept reusing."""
    if setting == "CC=false":
        result, wheels = _build_wheel(tmp_path, CC="false")
    else:
        result, wheels = _build_wheel(tmp_path, PATH=_compiler_free_path(tmp_path))
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert wheels == []
    assert "error: timer_manager's compiled core could not be compiled: " in output, output
    assert says in output, output
    assert "apt-get install gcc python3-dev" in output
    assert f"set {VARIABLE}=1 to install" in output


def _warnings(output: str) -> list[str]:
    """The lines of a build's output that warn."""
    return [line.strip() for line in output.splitlines() if "warning" in line.lower()]


@pytest.fixture(scope="module")
def pure_build(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Path]:
    """The build ``TIMER_MANAGER_NO_EXTENSIONS=1`` makes with no working compiler (``CC=false``), verbose, as
    on a user's machine (which does not set ``PYTHONDONTWRITEBYTECODE``: with it, setuptools warns that it
    skips byte-compiling): built once. Its output and its wheel."""
    result, wheels = _build_wheel(
        tmp_path_factory.mktemp("pure"), verbose=True, CC="false", PYTHONDONTWRITEBYTECODE=None, **{VARIABLE: "1"}
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert [wheel.name for wheel in wheels] == [f"timer_manager-{timer_manager.__version__}-py3-none-any.whl"]
    return result, wheels[0]


@pytest.fixture(scope="module")
def pure_wheel(pure_build: tuple[subprocess.CompletedProcess[str], Path]) -> Path:
    """The wheel ``TIMER_MANAGER_NO_EXTENSIONS=1`` builds."""
    return pure_build[1]


def test_the_opt_in_build_prints_no_warning(pure_build: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    """The pure-Python build, a documented way to install, says what it builds and warns of nothing.
    catches: a MANIFEST.in rule for the C file Cython generates, which matches nothing where no C file is
    generated ("warning: no previously-included files found matching 'timer_manager/*.c'")."""
    result = pure_build[0]
    assert f"{VARIABLE} is set: building timer_manager as pure Python (py3-none-any)." in result.stderr
    assert _warnings(result.stdout + result.stderr) == []


def test_the_opt_in_builds_a_pure_wheel_that_says_what_it_is(pure_wheel: Path, tmp_path: Path) -> None:
    """With ``TIMER_MANAGER_NO_EXTENSIONS=1`` the build needs no compiler (``CC=false``) and makes a
    ``py3-none-any`` wheel; installed in a fresh environment, ``python -m timer_manager info`` says the
    pure-Python core is live and why, and the import warns, unless the variable is set there too.
    catches: a pure build tagged for a platform, or a pure install that cannot tell the user what it is."""
    env_dir = tmp_path / "env"
    venv.create(env_dir, with_pip=False)
    python = env_dir / "bin" / "python"
    install = [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index"]
    installed = subprocess.run([*install, str(pure_wheel)], capture_output=True, text=True, timeout=120, check=False)
    assert installed.returncode == 0, installed.stdout + installed.stderr

    def info(**env: str) -> subprocess.CompletedProcess[str]:
        environ = {key: value for key, value in os.environ.items() if key != VARIABLE} | env
        return subprocess.run(
            [str(python), "-I", "-m", "timer_manager", "info"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            cwd=tmp_path,
            env=environ,
        )

    plain = info()
    assert plain.returncode == 0, plain.stderr
    assert f"package:  {env_dir}" in plain.stdout
    assert f"core:     python (no compiled extension is installed: it was built with {VARIABLE}=1" in plain.stdout
    assert "RuntimeWarning: timer_manager runs on its pure-Python core" in plain.stderr

    chosen = info(**{VARIABLE: "1"})
    assert chosen.returncode == 0, chosen.stderr
    assert f"core:     python ({VARIABLE} is set)" in chosen.stdout
    assert chosen.stderr == ""


def _package_files() -> set[str]:
    """What the wheel must hold of the source tree: every module, subpackages included, the stub and py.typed."""
    package = ROOT / "timer_manager"
    modules = {path for path in package.rglob("*.py") if "__pycache__" not in path.parts}
    typing_files = {package / "py.typed", *package.glob("*.pyi")}
    return {path.relative_to(ROOT).as_posix() for path in modules | typing_files}


def test_the_wheel_holds_every_module_and_the_typing_files(pure_wheel: Path) -> None:
    """The wheel's package is the source tree's: every module of every subpackage (``timer_manager.redis``
    too), ``py.typed`` and the compiled core's stub, and no source of the compiled core (``.pyx``, ``.pxi``,
    ``.pxd``, ``.h``, generated ``.c``). The pure wheel is checked (no compile); the compiled one is built
    from the same configuration, plus its ``.so``. catches: a subpackage left out of
    ``[tool.setuptools] packages``, so that ``import timer_manager.redis`` fails after ``pip install .``
    while the editable install the tests run on has it."""
    with zipfile.ZipFile(pure_wheel) as wheel:
        held = {name for name in wheel.namelist() if name.startswith("timer_manager/")}
    assert sorted(_package_files() - held) == []
    assert sorted(held - _package_files()) == []


# What the sdist leaves out of the repository: CI, the pre-commit set-up and the maintainers' scripts.
NOT_IN_SDIST = (".ci/", ".github/", "tools/", ".gitignore", ".pre-commit-config.yaml")
# What the build adds to the sdist.
SDIST_METADATA = ("PKG-INFO", "setup.cfg", "timer_manager.egg-info/")


def test_the_sdist_holds_what_a_user_builds_tests_and_reads(tmp_path: Path) -> None:
    """The sdist, built as ``python -m build --sdist`` does from a copy of the files git tracks, holds every
    one of them but CI's and the maintainers' own: the package with the compiled core's sources, the tests
    and benches its test suite runs, the documentation site's sources (``docs/``, the README's chart) and
    the changes the README links to; nothing else (no generated ``.c``), and building it prints no
    warning. catches: a subpackage, a documentation page or image missing from the sdist, and the warnings
    of a MANIFEST.in rule that matches nothing in a fresh clone."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed: the tracked files are unknown")
    top = subprocess.run(["git", "rev-parse", "--show-toplevel"], capture_output=True, text=True, cwd=ROOT, check=False)
    if top.returncode != 0 or Path(top.stdout.strip()).resolve() != ROOT.resolve():
        pytest.skip(f"{ROOT} is not a git checkout of its own: the tracked files are unknown")
    listed = subprocess.run(["git", "ls-files", "-z"], capture_output=True, text=True, cwd=ROOT, check=True)
    tracked = sorted(name for name in listed.stdout.split("\0") if name)
    src = tmp_path / "src"
    for name in tracked:
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, src / name)
    environ = {key: value for key, value in os.environ.items() if key != VARIABLE}
    build = f"from setuptools import build_meta; print(build_meta.build_sdist({str(tmp_path / 'dist')!r}))"
    result = subprocess.run(
        [sys.executable, "-c", build], capture_output=True, text=True, timeout=120, check=False, cwd=src, env=environ
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert _warnings(output) == []
    with tarfile.open(tmp_path / "dist" / result.stdout.splitlines()[-1]) as sdist:
        held = {member.name.split("/", 1)[1] for member in sdist.getmembers() if member.isfile()}
    shipped = {name for name in held if not name.startswith(SDIST_METADATA)}
    assert sorted(set(tracked) - shipped - {name for name in tracked if name.startswith(NOT_IN_SDIST)}) == []
    assert sorted(shipped - set(tracked)) == []


def test_the_editable_install_of_the_readmes_test_command_warns_of_nothing(tmp_path: Path) -> None:
    """``pip install -e '.[test]'`` (the README's test command) as the build backend makes it (here without
    the extension, which does not change how the editable install is laid out), with warnings shown as
    pip 25.1 and later show them: nothing warns. catches: setuptools' meta-path finder for a flat layout,
    whose BuildBackendWarning ("Editable installation ... Please be careful with folders in your working
    directory") every newcomer saw on a current pip."""
    src = _source_copy(tmp_path)
    environ = {key: value for key, value in os.environ.items() if key != "PYTHONDONTWRITEBYTECODE"}
    environ[VARIABLE] = "1"
    # As pip's hook runner does it: every warning recorded, then shown.
    build = (
        "import warnings\n"
        "from setuptools import build_meta\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        f"    wheel = build_meta.build_editable({str(tmp_path / 'out')!r})\n"
        "for warning in caught:\n"
        "    print(f'warning: {warning.category.__name__}: {warning.message}')\n"
        "print(wheel)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", build],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=src,
        env=environ,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert result.stdout.splitlines()[-1].endswith(".whl"), output
    assert _warnings(output) == []
