"""Command line of the storm tests.

    .venv/bin/python -m cluster_tests run [full | ci | SCENARIO ...] [--out DIR] [--rate R] [--seed N]
    .venv/bin/python -m cluster_tests list
    .venv/bin/python -m cluster_tests check HISTORY.jsonl

`run` exits 1 when any scenario has a violation, an error or a process left behind (each scenario
stops what it started and names any PID it had to SIGKILL). Pending scenarios are never run.
"""

from __future__ import annotations

import argparse
import dataclasses
import signal
import sys
import time
from pathlib import Path

from cluster_tests import checker, report
from cluster_tests.history import read_history
from cluster_tests.scenarios import CI, FULL, SCENARIOS
from cluster_tests.storm import run_scenario
from session_store.logging import configure_logging


def _names(args: list[str]) -> list[str]:
    names: list[str] = []
    for a in args or ["full"]:
        names += list(FULL) if a == "full" else list(CI) if a == "ci" else [a]
    return names


def cmd_run(args: argparse.Namespace) -> int:
    """Run scenarios one after the other; print each summary and a final table."""
    names = _names(args.scenarios)
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        print(f"unknown scenarios: {unknown}; see `list`", file=sys.stderr)
        return 2
    pending = [n for n in names if SCENARIOS[n].pending]
    if pending:
        print(f"pending scenarios cannot run: {pending}; see `list`", file=sys.stderr)
        return 2
    out = args.out or Path(".run/cluster-tests") / time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    results = []
    for name in names:
        scenario = SCENARIOS[name]
        if args.duration:
            last = max((step.at + step.seconds for step in scenario.steps), default=0.0)
            scenario = dataclasses.replace(scenario, duration=max(args.duration, last + 2))
        print(f"== {name}: {scenario.description} ({scenario.duration:g} s storm)", flush=True)
        result = run_scenario(scenario, out / name, rate=args.rate, seed=args.seed)
        results.append(result)
        print(result.summary or f"scenario {name}: FAIL - {result.error}", flush=True)
        print(flush=True)
    print(f"{'scenario':<14} {'result':<6} {'violations':>10} {'seconds':>8}")
    for r in results:
        n = len(r.check.violations) if r.check else -1
        print(f"{r.name:<14} {'PASS' if r.ok else 'FAIL':<6} {n:>10} {r.seconds:>8.0f}")
    skipped = [s for s in SCENARIOS.values() if s.pending]
    for s in skipped:
        print(f"{s.name:<14} {'-':<6} pending (not run): {s.pending}")
    return 0 if all(r.ok for r in results) else 1


def cmd_list(args: argparse.Namespace) -> int:
    """Print every scenario, its faults, and which are pending."""
    for s in SCENARIOS.values():
        tag = f"PENDING: {s.pending}" if s.pending else ("ci" if s.name in CI else "full")
        print(f"{s.name:<18} {s.duration:>4g} s  [{tag}]  {s.description}")
        for step in s.steps:
            print(f"{'':<20} at {step.at:>4g} s: {step.kind} {step.target} {step.seconds or ''}")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    """Check an existing history again and rewrite its report."""
    history = read_history(args.history)
    result = checker.check(history)
    print(report.write_report(history, result, args.history.parent))
    if history.meta.expect:
        return 0 if set(history.meta.expect) <= set(result.by_kind()) else 1
    return 0 if result.ok else 1


def _interrupt(signum: int, frame: object) -> None:
    # Once: a second signal must not cut the clean-up short (it is bounded by the stop grace).
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run it; returns the exit code.

    SIGTERM and SIGINT (even where a background launch made SIGINT ignored) interrupt the run the same
    way: the running scenario stops every process it started before the command exits (130).
    """
    parser = argparse.ArgumentParser(prog="python -m cluster_tests", description="Cluster storm tests.")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run scenarios (default: full)")
    run.add_argument("scenarios", nargs="*", help="scenario names, `full` or `ci`")
    run.add_argument("--out", type=Path, help="output directory (default .run/cluster-tests/<UTC time>)")
    run.add_argument("--rate", type=float, help="actions per second (default: each scenario's)")
    run.add_argument("--duration", type=float, help="storm seconds (never shorter than the faults need)")
    run.add_argument("--seed", type=int, default=1, help="seed of the workload's choices")
    sub.add_parser("list", help="list the scenarios")
    chk = sub.add_parser("check", help="re-check a history file and rewrite its report")
    chk.add_argument("history", type=Path)
    args = parser.parse_args(argv)
    configure_logging("warning", json=False)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _interrupt)
    try:
        return {"run": cmd_run, "list": cmd_list, "check": cmd_check}[args.command](args)
    except KeyboardInterrupt:
        print("interrupted: every process of the interrupted scenario was stopped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
