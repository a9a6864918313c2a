"""What ``compare.py`` prints and writes: the environment block, the progress bar, the markdown
tables of medians and same-run ratios, the PASS/FAIL lines of the targets, the JSON and the chart.

A record is one measurement: ``{"workload", "n", "round", "contender", "metrics", "check"}``;
``check`` is None when the delivered events were the expected ones, else why not (such a record's
numbers are never reported).
"""

from __future__ import annotations

import datetime
import importlib.metadata
import math
import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

__all__ = (
    "BASELINE",
    "TARGETS",
    "Progress",
    "draw_chart",
    "environment",
    "environment_block",
    "evaluate_targets",
    "markdown_tables",
    "steady_summary",
    "steady_tables",
    "steady_targets",
)

BASELINE = "call_later"  # the ratios are contender / this, in the same round

Record = dict[str, Any]


# ------------------------------------------------------------------ environment


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _library_version() -> str:
    import subprocess

    import timer_manager

    root = Path(timer_manager.__file__).resolve().parent.parent
    try:
        sha = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no", "timer_manager"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        revision = f", git {sha}{' + local changes' if dirty else ''}"
    except (OSError, subprocess.CalledProcessError):
        revision = ""
    return f"timer_manager {timer_manager.__version__}{revision}"


def environment(loop: str, core: str, argv: Sequence[str]) -> dict[str, str]:
    """The facts the README's performance section shows next to the table."""
    try:
        uvloop_version = importlib.metadata.version("uvloop")
    except importlib.metadata.PackageNotFoundError:
        uvloop_version = "not installed"
    memory = ""
    try:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        memory = f", {pages / 2**30:.0f} GiB RAM"
    except (ValueError, OSError, AttributeError):
        pass
    return {
        "library": _library_version(),
        "machine": f"{platform.system()} {platform.release()} {platform.machine()}, {os.cpu_count()} CPUs{memory}",
        "cpu": _cpu_model(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "loop": f"{loop} (uvloop {uvloop_version} for the uvloop row)",
        "core": core,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": " ".join(shlex.quote(arg) for arg in ["python", "benches/compare.py", *argv]),
    }


def environment_block(env: dict[str, str]) -> str:
    """The block to paste above the table in the README."""
    return "\n".join(
        [
            f"- Library: {env['library']}",
            f"- Machine: {env['machine']}",
            f"- CPU: {env['cpu']}",
            f"- Python: {env['python']}",
            f"- Loop: {env['loop']}",
            f"- CORE: {env['core']}",
            f"- Date: {env['date']}",
            f"- Command: `{env['command']}`",
        ]
    )


# ------------------------------------------------------------------ progress


class Progress:
    """A one-line progress bar on stderr (redrawn with ``\\r``); silent when disabled."""

    def __init__(self, total: int, enabled: bool = True, width: int = 30) -> None:
        self.total = max(1, total)
        self.done = 0
        self.enabled = enabled
        self.width = width
        self.started = time.perf_counter()

    def step(self, label: str) -> None:
        """Show that the measurement ``label`` starts now."""
        if not self.enabled:
            return
        filled = self.width * self.done // self.total
        elapsed = time.perf_counter() - self.started
        bar = "#" * filled + "-" * (self.width - filled)
        line = f"\r[{bar}] {self.done}/{self.total} {elapsed:5.0f}s {label}"
        sys.stderr.write(line[:110].ljust(110))
        sys.stderr.flush()
        self.done += 1

    def close(self) -> None:
        if self.enabled:
            elapsed = time.perf_counter() - self.started
            sys.stderr.write(f"\r[{'#' * self.width}] {self.total}/{self.total} {elapsed:5.0f}s done".ljust(110) + "\n")
            sys.stderr.flush()


# ------------------------------------------------------------------ medians and ratios


def _select(records: Iterable[Record], workload: str, n: int, contender: str) -> list[Record]:
    return [
        r
        for r in records
        if r["workload"] == workload and r["n"] == n and r["contender"] == contender and not r["check"]
    ]


def median_of(records: Sequence[Record], workload: str, n: int, contender: str, metric: str) -> float | None:
    """The median of ``metric`` over the rounds, or None (not run, or it failed its check)."""
    values = [r["metrics"][metric] for r in _select(records, workload, n, contender) if metric in r["metrics"]]
    return statistics.median(values) if values else None


def ratio_of(records: Sequence[Record], workload: str, n: int, contender: str, base: str, metric: str) -> float | None:
    """The median over rounds of contender / base, each pair taken from the same round."""
    mine = {r["round"]: r["metrics"].get(metric) for r in _select(records, workload, n, contender)}
    theirs = {r["round"]: r["metrics"].get(metric) for r in _select(records, workload, n, base)}
    ratios = [mine[k] / theirs[k] for k in mine if k in theirs and mine[k] is not None and theirs[k]]
    return statistics.median(ratios) if ratios else None


def failures(records: Sequence[Record], workload: str, n: int, contender: str) -> list[str]:
    return [
        r["check"]
        for r in records
        if r["workload"] == workload and r["n"] == n and r["contender"] == contender and r["check"]
    ]


# (workload, metric, title, with ratios)
TABLES = [
    ("storm-single", "cpu_per_event_us", "CPU per delivered expiry (µs), storm, `recv_event()` one at a time", True),
    ("storm-batch", "cpu_per_event_us", "CPU per delivered expiry (µs), storm, `recv_events(1024)` batches", True),
    ("storm-single", "set_new_us", "Set call for a new name (µs): `try_set_timer` / `call_at` + dict store", True),
    ("churn", "cpu_per_op_us", "Churn, CPU per operation (µs): set, reset all, cancel half, deliver half", True),
    ("churn", "reset_us", "Reset call (µs)", True),
    ("churn", "cancel_us", "Cancel call (µs)", True),
    ("idle", "idle_core_pct", "Idle: % of one core with every timer pending, none due", False),
    ("memory", "traced_bytes_per_timer", "Memory per live timer, tracemalloc (bytes)", True),
    ("memory", "rss_bytes_per_timer", "Memory per live timer, RSS growth (bytes)", True),
]

LATENESS = [("lateness-h0", "heartbeat 0"), ("lateness-h10", "heartbeat 10 ms")]


def _size_label(n: int) -> str:
    exponent = round(__import__("math").log10(n)) if n > 0 else 0
    return f"10^{exponent}" if 10**exponent == n else str(n)


def _fmt(value: float) -> str:
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    if value >= 0.1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def markdown_tables(records: Sequence[Record], contenders: Sequence[Any], sizes: Sequence[int]) -> str:
    """Every table: rows are contenders, columns sizes, cells ``median (ratio to call_later)``."""
    lines: list[str] = []
    header = "| contender | " + " | ".join(_size_label(n) for n in sizes) + " |"
    rule = "|---|" + "---:|" * len(sizes)
    for workload, metric, title, with_ratio in TABLES:
        if not any(r["workload"] == workload for r in records):
            continue
        lines += [f"**{title}**" + (f" — in parentheses: ratio to `{BASELINE}`, same run" if with_ratio else ""), ""]
        lines += [header, rule]
        for spec in contenders:
            cells = []
            for n in sizes:
                value = median_of(records, workload, n, spec.key, metric)
                if failures(records, workload, n, spec.key):
                    cells.append("CHECK FAILED")
                elif value is None:
                    cells.append("—")
                else:
                    ratio = ratio_of(records, workload, n, spec.key, BASELINE, metric) if with_ratio else None
                    cells.append(_fmt(value) + (f" ({ratio:.2f}x)" if ratio is not None else ""))
            lines.append(f"| {spec.key} | " + " | ".join(cells) + " |")
        lines.append("")
    for workload, title in LATENESS:
        if not any(r["workload"] == workload for r in records):
            continue
        lines += [f"**Lateness in the storm (ms), {title}: p50 / p99 / max, receive time - deadline**", ""]
        lines += [header, rule]
        overran = False
        for spec in contenders:
            cells = []
            for n in sizes:
                if failures(records, workload, n, spec.key):
                    cells.append("CHECK FAILED")
                    continue
                p50, p99, top = (median_of(records, workload, n, spec.key, m) for m in ("p50_ms", "p99_ms", "max_ms"))
                if p50 is None or p99 is None or top is None:
                    cells.append("—")
                    continue
                early = median_of(records, workload, n, spec.key, "early") or 0
                over = median_of(records, workload, n, spec.key, "setup_over_lead") or 0
                note = (f", {early:.0f} early" if early else "") + (" †" if over > 1 else "")
                overran = overran or over > 1
                cells.append(f"{_fmt(p50)} / {_fmt(p99)} / {_fmt(top)}{note}")
            lines.append(f"| {spec.key} | " + " | ".join(cells) + " |")
        lines.append("")
        if overran:
            lines += [
                "† setting the timers took longer than the lead time: the first were late before delivery began.",
                "",
            ]
    return "\n".join(lines)


# ------------------------------------------------------------------ targets


# (label, workload, metric, size, kind, bound): kind "faster" needs base/lib >= bound (same-run
# ratio); "max" needs the lib's median <= bound (a callable of the heartbeat for lateness).
TARGETS: list[tuple[str, str, str, int, str, float]] = [
    ("CPU per delivered expiry, recv_event(), vs call_later", "storm-single", "cpu_per_event_us", 10**5, "faster", 2.5),
    ("CPU per delivered expiry, recv_event(), vs call_later", "storm-single", "cpu_per_event_us", 10**6, "faster", 2.5),
    (
        "CPU per delivered expiry, recv_events(1024), vs call_later",
        "storm-batch",
        "cpu_per_event_us",
        10**5,
        "faster",
        5.0,
    ),
    (
        "CPU per delivered expiry, recv_events(1024), vs call_later",
        "storm-batch",
        "cpu_per_event_us",
        10**6,
        "faster",
        5.0,
    ),
    ("try_set_timer (new name) vs call_later + dict store", "storm-single", "set_new_us", 10**6, "faster", 4.0),
    ("idle CPU, heartbeat 10 ms, % of a core", "idle", "idle_core_pct", 10**6, "max", 0.1),
    ("storm lateness p99, heartbeat 10 ms (ms)", "lateness-h10", "p99_ms", 10**5, "max", 12.0),
    ("storm lateness, never early (events before deadline)", "lateness-h10", "early", 10**5, "max", 0.0),
]


def evaluate_targets(
    records: Sequence[Record], sizes: Sequence[int], library: str = "tm-cython"
) -> list[tuple[str, bool | None, str]]:
    """Each target as ``(line, passed, detail)``; a target whose size was not run is checked at
    the largest size that was (and says so); passed is None when it could not be measured."""
    out: list[tuple[str, bool | None, str]] = []
    for label, workload, metric, size, kind, bound in TARGETS:
        n = size if size in sizes else max(sizes)
        at = _size_label(n) + ("" if n == size else f" (target is at {_size_label(size)}; not run)")
        if failures(records, workload, n, library):
            out.append((f"{label} @ {at}", False, "the event check failed"))
            continue
        if kind == "faster":
            ratio = ratio_of(records, workload, n, BASELINE, library, metric)
            mine = median_of(records, workload, n, library, metric)
            theirs = median_of(records, workload, n, BASELINE, metric)
            if ratio is None or mine is None or theirs is None:
                out.append((f"{label} @ {at}", None, "not measured"))
                continue
            detail = f"{ratio:.2f}x less ({_fmt(mine)} vs {_fmt(theirs)} µs), need >= {bound:g}x"
            out.append((f"{label} @ {at}", ratio >= bound, detail))
        else:
            value = median_of(records, workload, n, library, metric)
            if metric == "early":
                values = [r["metrics"]["early"] for r in _select(records, workload, n, library)]
                value = max(values) if values else None
                mins = [r["metrics"]["min_ms"] for r in _select(records, workload, n, library)]
                extra = f" (min lateness {min(mins):.3f} ms)" if mins else ""
            else:
                extra = ""
            if value is None:
                out.append((f"{label} @ {at}", None, "not measured"))
                continue
            detail = f"{_fmt(value) if metric != 'early' else int(value)}, need <= {bound:g}{extra}"
            out.append((f"{label} @ {at}", value <= bound, detail))
    return out


def target_lines(results: list[tuple[str, bool | None, str]], library: str) -> str:
    lines = [f"Targets ({library}, same-run ratios, GC on):"]
    for label, passed, detail in results:
        verdict = "PASS" if passed else ("FAIL" if passed is False else "N/A ")
        lines.append(f"  {verdict}  {label}: {detail}")
    return "\n".join(lines)


# ------------------------------------------------------------------ chart


def draw_chart(
    records: Sequence[Record], contenders: Sequence[Any], sizes: Sequence[int], path: Path, subtitle: str = ""
) -> None:
    """Cost per operation and lateness against the number of timers, one line per contender
    (the same colour for a contender in every panel)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    plain = FuncFormatter(lambda value, _: f"{value:g}")

    panels = [
        ("storm-single", "cpu_per_event_us", "CPU per delivered expiry, recv_event() (µs)"),
        ("storm-batch", "cpu_per_event_us", "CPU per delivered expiry, recv_events(1024) (µs)"),
        ("churn", "cpu_per_op_us", "Churn: CPU per operation (µs)"),
        ("storm-single", "set_new_us", "Set call, new name (µs)"),
        ("lateness-h0", "p99_ms", "Storm lateness p99, heartbeat 0 (ms)"),
        ("lateness-h10", "p99_ms", "Storm lateness p99, heartbeat 10 ms (ms)"),
    ]
    fig, axes = plt.subplots(3, 2, figsize=(12, 13))
    for ax, (workload, metric, title) in zip(axes.flat, panels, strict=False):
        for index, spec in enumerate(contenders):
            xs, ys = [], []
            for n in sizes:
                value = median_of(records, workload, n, spec.key, metric)
                if value is not None and value > 0:
                    xs.append(n)
                    ys.append(value)
            if xs:
                ax.plot(
                    xs,
                    ys,
                    marker="o",
                    label=spec.key,
                    color=colours[index % len(colours)],
                    linestyle="-" if spec.key.startswith("tm-") else "--",
                )
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(plain)
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.set_xticks(list(sizes))
        ax.set_xticklabels([_size_label(n) for n in sizes])
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("timers")
        ax.grid(True, which="both", alpha=0.3)
        if ax.has_data():
            ax.legend(fontsize=8)
    if subtitle:
        fig.suptitle(subtitle, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ------------------------------------------------------------------ the steady workload

LOOPS = ("asyncio", "uvloop")
STYLES = (("single", "`recv_event()`"), ("batch", "`recv_events(1024)`"))
# (rate at most, bound on tm-cython's CPU per event / call_later's on the same loop)
STEADY_CPU_BOUNDS = ((1_000.0, 1.0), (float("inf"), 0.5))
STEADY_P99_MS = 1.0  # lateness p99 bound at heartbeat 0, rates up to STEADY_P99_RATE
STEADY_P99_RATE = 10_000.0


def default_slack() -> float:
    """The library's default ``timer_slack`` (s)."""
    from timer_manager.manager import DEFAULT_TIMER_SLACK

    return DEFAULT_TIMER_SLACK


def _rate_label(rate: float) -> str:
    return f"{rate / 1000:g}k/s" if rate >= 1000 else f"{rate:g}/s"


def _hb_label(heartbeat: float | None) -> str:
    return "—" if heartbeat is None else f"{heartbeat * 1e3:g} ms"


def _steady_select(records: Iterable[Record], **where: Any) -> list[Record]:
    return [r for r in records if r["workload"] == "steady" and all(r.get(k) == v for k, v in where.items())]


def _baseline_key(loop: str) -> str:
    return BASELINE if loop == "asyncio" else f"{BASELINE}-uvloop"


def _library_key(loop: str, library: str = "tm-cython") -> str:
    return library if loop == "asyncio" else f"{library}-uvloop"


def steady_cell(
    records: Sequence[Record], contender: str, loop: str, rate: float, heartbeat: float | None, style: str
) -> dict[str, float] | None:
    """Medians over rounds of one steady cell, with ``ratio`` (the median of same-round ratios of CPU per
    event to call_later's on the same loop), or None (not run, or its event check failed)."""
    mine = _steady_select(records, contender=contender, loop=loop, rate=rate, heartbeat=heartbeat, style=style)
    if not mine or any(r["check"] for r in mine):
        return None
    theirs = {
        r["round"]: r["metrics"]["cpu_per_event_us"]
        for r in _steady_select(records, contender=_baseline_key(loop), loop=loop, rate=rate, style=style)
        if not r["check"]
    }
    cell = {
        metric: statistics.median(r["metrics"][metric] for r in mine)
        for metric in ("cpu_per_event_us", "p50_ms", "p99_ms", "max_ms")
    }
    cell["early"] = max(r["metrics"]["early"] for r in mine)
    ratios = [r["metrics"]["cpu_per_event_us"] / theirs[r["round"]] for r in mine if theirs.get(r["round"])]
    cell["ratio"] = statistics.median(ratios) if ratios else math.nan
    return cell


def _steady_axes(records: Sequence[Record]) -> tuple[list[float], list[float | None]]:
    rates = sorted({r["rate"] for r in records if r["workload"] == "steady"})
    beats = sorted({r["heartbeat"] for r in records if r["workload"] == "steady" and r["heartbeat"] is not None})
    return rates, beats


def steady_summary(records: Sequence[Record], library: str = "tm-cython") -> str:
    """The README's table: for each rate and heartbeat, the library's CPU per event as a ratio to
    call_later's on the same loop, and its lateness p50 / p99, on each loop and receive style."""
    rates, beats = _steady_axes(records)
    loops = [loop for loop in LOOPS if _steady_select(records, loop=loop)]
    columns = [(loop, style, label) for loop in loops for style, label in STYLES]
    lines = [
        f"**Steady rates: `{library}` CPU per delivered event / `{BASELINE}`'s on the same loop; lateness p50 / p99 "
        "(ms)**",
        "",
        "| rate | heartbeat | " + " | ".join(f"{loop}, {label}" for loop, _, label in columns) + " |",
        "|---|---|" + "---:|" * len(columns),
    ]
    for rate in rates:
        for heartbeat in beats:
            cells = []
            for loop, style, _ in columns:
                cell = steady_cell(records, _library_key(loop, library), loop, rate, heartbeat, style)
                cells.append(_steady_text(cell, cpu=False))
            lines.append(f"| {_rate_label(rate)} | {_hb_label(heartbeat)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _steady_text(cell: dict[str, float] | None, cpu: bool = True) -> str:
    if cell is None:
        return "—"
    early = f", {cell['early']:.0f} early" if cell["early"] else ""
    head = f"{_fmt(cell['cpu_per_event_us'])} " if cpu else ""
    return f"{head}({cell['ratio']:.2f}x) · {_fmt(cell['p50_ms'])} / {_fmt(cell['p99_ms'])}{early}"


def steady_tables(records: Sequence[Record]) -> str:
    """Every contender, per loop and receive style: CPU per event (µs) with its ratio to call_later's on
    the same loop, and lateness p50 / p99 (ms)."""
    rates, _ = _steady_axes(records)
    lines: list[str] = []
    for loop in LOOPS:
        for style, label in STYLES:
            rows = sorted(
                {(r["contender"], r["heartbeat"]) for r in _steady_select(records, loop=loop, style=style)},
                key=lambda row: (_contender_order(row[0]), -1.0 if row[1] is None else row[1]),
            )
            if not rows:
                continue
            lines += [
                f"**Steady, {loop}, {label}: CPU per delivered event (µs) (ratio to `{_baseline_key(loop)}`, same "
                "round) · lateness p50 / p99 (ms)**",
                "",
                "| contender | heartbeat | " + " | ".join(_rate_label(rate) for rate in rates) + " |",
                "|---|---|" + "---:|" * len(rates),
            ]
            for contender, heartbeat in rows:
                cells = [_steady_text(steady_cell(records, contender, loop, rate, heartbeat, style)) for rate in rates]
                lines.append(f"| {contender} | {_hb_label(heartbeat)} | " + " | ".join(cells) + " |")
            lines.append("")
    return "\n".join(lines)


def _contender_order(key: str) -> int:
    order = ["tm-cython", "tm-cython-precise", "tm-python", "call_later", "heapq", "rust-scan"]
    base = key.removesuffix("-uvloop")
    return order.index(base) if base in order else len(order)


def steady_targets(records: Sequence[Record], library: str = "tm-cython") -> list[tuple[str, bool | None, str]]:
    """The steady workload's targets, per loop: the worst cell of each."""
    out: list[tuple[str, bool | None, str]] = []
    rates, beats = _steady_axes(records)
    for loop in LOOPS:
        key = _library_key(loop, library)
        if not _steady_select(records, contender=key):
            continue
        low = 0.0
        for top, bound in STEADY_CPU_BOUNDS:
            cells = [
                (steady_cell(records, key, loop, rate, heartbeat, style), rate, heartbeat, style)
                for rate in rates
                if low < rate <= top
                for heartbeat in beats
                for style, _ in STYLES
            ]
            low = top
            measured = [(c["ratio"], rate, hb, style) for c, rate, hb, style in cells if c is not None]
            if not measured:
                continue
            worst = max(measured)
            where = f"{_rate_label(worst[1])}, heartbeat {_hb_label(worst[2])}, {worst[3]}"
            label = f"steady CPU per event vs {_baseline_key(loop)}, {loop}, every cell at {_rates_text(cells)}"
            out.append((label, worst[0] <= bound, f"worst {worst[0]:.2f}x ({where}), need <= {bound:g}x"))
        cells_p99 = [
            (steady_cell(records, key, loop, rate, 0.0, style), rate, style)
            for rate in rates
            if rate <= STEADY_P99_RATE
            for style, _ in STYLES
        ]
        measured_p99 = [(c["p99_ms"], rate, style) for c, rate, style in cells_p99 if c is not None]
        if measured_p99:
            worst_p99 = max(measured_p99)
            out.append(
                (
                    f"steady lateness p99 at heartbeat 0, {loop}, rates up to {_rate_label(STEADY_P99_RATE)} (ms)",
                    worst_p99[0] <= STEADY_P99_MS,
                    f"worst {_fmt(worst_p99[0])} ({_rate_label(worst_p99[1])}, {worst_p99[2]}), need <= "
                    f"{STEADY_P99_MS:g}",
                )
            )
        early = [r["metrics"]["early"] for r in _steady_select(records, contender=key) if not r["check"]]
        if early:
            out.append((f"steady, never early, {loop} (events before deadline)", max(early) == 0, f"{max(early):.0f}"))
    return out


def _rates_text(cells: Sequence[tuple[Any, float, Any, Any]]) -> str:
    return ", ".join(_rate_label(rate) for rate in sorted({rate for _, rate, _, _ in cells}))
