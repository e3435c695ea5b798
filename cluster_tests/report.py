"""The report of a run: a one-screen summary (report.txt) and a timeline PNG (timeline.png) next to the
history: calls per second by outcome, the rate of unknown outcomes, p99 latency per second, with the
faults and clock jumps marked."""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path

from cluster_tests.checker import CheckResult
from cluster_tests.history import FAIL, OK, UNKNOWN, History, Op

MAX_VIOLATIONS_SHOWN = 12


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The q-quantile (0-1) of already sorted values, nearest rank; 0 for none."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(q * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def storm_ops(history: History) -> list[Op]:
    """The identity nodes' calls (not the final read or the markers)."""
    return [o for o in history.ops if o.worker not in ("final", "marker")]


def _fmt(n: float) -> str:
    return f"{n:,.0f}".replace(",", " ")


def summary_text(
    history: History,
    check: CheckResult,
    *,
    seconds: float = 0.0,
    error: str = "",
    leftovers: Sequence[str] = (),
    files: Sequence[Path] = (),
) -> str:
    """The one-screen summary."""
    m = history.meta
    ops = storm_ops(history)
    storm_s = float(history.notes.get("storm_end", 0.0)) - float(history.notes.get("storm_start", 0.0))
    clean_run = not error and not leftovers
    if m.expect:
        found = set(check.by_kind())
        verdict = (
            "PASS (control: the expected violations were found)"
            if clean_run and set(m.expect) <= found
            else (
                f"FAIL (control: expected {', '.join(m.expect)} violations, found {sorted(found) or 'none'})"
            )
        )
    else:
        verdict = "PASS" if check.ok and clean_run else "FAIL"
    lat = sorted((o.t1 - o.t0) * 1000 for o in ops)
    kinds = Counter(o.op for o in ops)
    outcomes = Counter(o.outcome for o in ops)
    errors: dict[str, Counter[str]] = defaultdict(Counter)
    for o in ops:
        if o.outcome != OK:
            errors[o.outcome][o.error] += 1
    retried = [o for o in ops if o.attempts > 1]
    actions = _fmt(int(history.notes.get("actions", 0)))
    lines = [
        f"scenario {m.scenario}: {verdict} - {len(check.violations)} violations",
        f"  {m.shards} shards (appendfsync {m.appendfsync}), {m.nodes} service nodes, {storm_s:.0f} s storm, "
        f"{seconds:.0f} s wall in all",
        f"  calls {_fmt(len(ops))} ({len(ops) / storm_s if storm_s else 0:.0f}/s) in "
        f"{actions} actions; final read {_fmt(len(history.ops) - len(ops))} calls",
        "  by kind: " + ", ".join(f"{k} {_fmt(v)}" for k, v in sorted(kinds.items(), key=lambda kv: -kv[1])),
        f"  ok {_fmt(outcomes[OK])}; fail {_fmt(outcomes[FAIL])} ("
        + ", ".join(f"{e} {v}" for e, v in errors[FAIL].most_common())
        + f"); unknown {_fmt(outcomes[UNKNOWN])} ("
        + ", ".join(f"{e} {v}" for e, v in errors[UNKNOWN].most_common())
        + ")",
        f"  retries: {sum(o.attempts - 1 for o in retried)} extra attempts on {len(retried)} calls",
        f"  latency: p50 {percentile(lat, 0.5):.1f} ms, p99 {percentile(lat, 0.99):.1f} ms, "
        f"max {lat[-1] if lat else 0:.0f} ms",
    ]
    for f in history.faults:
        lines.append(f"  fault [{f.t0:5.1f}-{f.t1:5.1f} s] {f.kind} {f.target}: {f.detail}")
    s = check.stats
    lines.append(
        f"  checked: {s['acknowledged_sessions']} acknowledged sessions ({s['final_live']} live at the end), "
        f"{s['alive_observations']} alive / {s['dead_observations']} dead observations, "
        f"{s['limit_observations']} limit observations, {s['rotation_tokens']} refresh tokens "
        f"({s['rotation_unverifiable_tokens']} unverifiable), {s['count_checks']} counts, "
        f"{s['events']} events ({s['ending_events']} endings)"
    )
    lines.append(
        f"  violations: {len(check.violations)}" + (f" {dict(check.by_kind())}" if check.violations else "")
    )
    lines += [f"    {v}" for v in check.violations[:MAX_VIOLATIONS_SHOWN]]
    if len(check.violations) > MAX_VIOLATIONS_SHOWN:
        lines.append(f"    ... {len(check.violations) - MAX_VIOLATIONS_SHOWN} more in report.txt")
    if error:
        lines.append(f"  error: {error}")
    lines.append("  leftover processes: " + ("; ".join(leftovers) if leftovers else "none"))
    lines += [f"  {p}" for p in files]
    return "\n".join(lines)


def timeline_png(history: History, path: Path) -> None:
    """Plot calls/s by outcome, unknown-outcome rate and p99 latency per second, faults marked."""
    import matplotlib  # noqa: PLC0415 - imported late: only the report needs it (slow import)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415 - after choosing the backend

    ops = storm_ops(history)
    if not ops:
        return
    start = int(min(o.t0 for o in ops))
    end = int(max(o.t0 for o in ops)) + 1
    secs = list(range(start, end))
    by_sec: dict[int, list[Op]] = defaultdict(list)
    for o in ops:
        by_sec[int(o.t0)].append(o)
    counts = {k: [sum(1 for o in by_sec[t] if o.outcome == k) for t in secs] for k in (OK, FAIL, UNKNOWN)}
    unknown_rate = [100 * counts[UNKNOWN][i] / max(1, len(by_sec[t])) for i, t in enumerate(secs)]
    p99 = [percentile(sorted((o.t1 - o.t0) * 1000 for o in by_sec[t]), 0.99) for t in secs]

    fig, axes = plt.subplots(3, 1, figsize=(11, 7.5), sharex=True)
    ax_ops, ax_err, ax_lat = axes
    ax_ops.stackplot(
        secs,
        counts[OK],
        counts[FAIL],
        counts[UNKNOWN],
        labels=["ok", "fail (known outcome)", "unknown"],
        colors=["#4c9a2a", "#e0a030", "#c0392b"],
    )
    ax_ops.set_ylabel("calls/s")
    ax_ops.legend(loc="lower left", fontsize=8, framealpha=0.9)
    ax_err.plot(secs, unknown_rate, color="#c0392b")
    ax_err.set_ylim(0, max(5.0, *unknown_rate) * 1.1)
    ax_err.set_ylabel("unknown outcome %")
    ax_lat.plot(secs, p99, color="#2c3e50")
    ax_lat.set_yscale("log")
    ax_lat.set_ylabel("p99 latency (ms)")
    ax_lat.set_xlabel("seconds since the run began")
    for f in history.faults:
        for ax in axes:
            ax.axvspan(f.t0, max(f.t1, f.t0 + 0.3), color="#8e44ad", alpha=0.15)
        ax_ops.annotate(
            f"{f.kind} {f.target}".strip(),
            (f.t0, 1.0),
            xycoords=("data", "axes fraction"),
            fontsize=7,
            rotation=90,
            va="top",
            ha="right",
        )
    for c in history.clocks:
        for ax in axes:
            ax.axvline(c.t0, color="#2980b9", linestyle=":", linewidth=1)
    m = history.meta
    fig.suptitle(
        f"storm {m.scenario}: {m.shards} shards, {m.nodes} nodes (faults shaded, clock moves dotted)"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def write_report(
    history: History,
    check: CheckResult,
    out_dir: Path,
    *,
    seconds: float = 0.0,
    error: str = "",
    leftovers: Sequence[str] = (),
) -> str:
    """Write report.txt (summary and every violation) and timeline.png into `out_dir`; returns the summary."""
    png = out_dir / "timeline.png"
    timeline_png(history, png)
    text = summary_text(
        history,
        check,
        seconds=seconds,
        error=error,
        leftovers=leftovers,
        files=[out_dir / "history.jsonl", png],
    )
    full = text + "\n\nall violations:\n" + "\n".join(f"  {v}" for v in check.violations) + "\n"
    (out_dir / "report.txt").write_text(full)
    return text
