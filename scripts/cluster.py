"""Start, inspect and stop a local session-store cluster: N Redis shards and M service nodes on loopback.

    .venv/bin/python scripts/cluster.py up --shards 3 --nodes 3 [--test-clock] [--state FILE]
        [--replicas R --sentinels S | --cluster-mode [--replicas R]]
    .venv/bin/python scripts/cluster.py status [--state FILE]
    .venv/bin/python scripts/cluster.py down [--state FILE]

`up` waits until every node answers the gRPC health check with SERVING and writes a JSON state file
(default .run/cluster/state.json: every PID with its start time, port, URL, data directory and log);
`down` stops exactly those PIDs (SIGTERM, then SIGKILL after a bound) and says which it had to kill.
Shards keep their AOF under .run/cluster/data-<UTC time>/ and are started with `appendfsync always`
unless `--appendfsync` says otherwise. The processes outlive this command: that is what `down` is for.

`--replicas R --sentinels S` makes every shard a Sentinel group (R replicas; S sentinels watch every
group) and gives the nodes `redis+sentinel://` URLs. `--cluster-mode` starts one Redis Cluster of N
primaries instead (with `--replicas R`, R replicas each; no sentinels) and gives the nodes one
`redis+cluster://` URL. The implementation (and the fault functions the storm tests use) is
`cluster_tests/cluster.py`.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

# This file runs as a script (scripts/ is not a package): make the repository's packages importable.
REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from cluster_tests.cluster import (  # noqa: E402 - after the path set-up above
    APPENDFSYNC_CHOICES,
    DEFAULT_APPENDFSYNC,
    Cluster,
    ClusterError,
    ClusterState,
    NotAvailableError,
    check_capabilities,
    is_running,
    status_table,
)
from session_store.logging import configure_logging  # noqa: E402 - after the path set-up above

DEFAULT_STATE = Path(".run/cluster/state.json")


def _load(path: Path) -> Cluster | None:
    if not path.exists():
        return None
    return Cluster(ClusterState.from_json(path.read_text()), state_path=path)


@contextlib.contextmanager
def _stderr_to(path: Path) -> Iterator[None]:
    """Point file descriptor 2 at `path` meanwhile, so that child processes inherit the file."""
    sys.stderr.flush()
    saved = os.dup(2)
    with path.open("ab") as log:
        os.dup2(log.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)


def cmd_up(args: argparse.Namespace) -> int:
    """Start the cluster and write the state file."""
    try:
        check_capabilities(replicas=args.replicas, sentinels=args.sentinels, cluster_mode=args.cluster_mode)
    except NotAvailableError as exc:
        print(f"cluster: {exc}", file=sys.stderr)
        return 3
    existing = _load(args.state)
    if existing is not None and any(is_running(p, t) for _, _, p, t in existing.state.processes()):
        print(f"cluster: {args.state} names running processes: run `down` first", file=sys.stderr)
        return 1
    root = args.state.parent / time.strftime("data-%Y%m%dT%H%M%SZ", time.gmtime())
    root.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    try:
        # The processes outlive this command: they must not hold our stderr (a pipe would never close).
        with _stderr_to(root / "up.log"):
            cluster = Cluster.start(
                root,
                shards=args.shards,
                nodes=args.nodes,
                test_clock=args.test_clock,
                appendfsync=args.appendfsync,
                replicas=args.replicas,
                sentinels=args.sentinels,
                cluster_mode=args.cluster_mode,
                state_path=args.state,
            )
    except ClusterError as exc:
        print(f"cluster: {exc} (see {root / 'up.log'})", file=sys.stderr)
        return 1
    print(f"cluster up in {time.monotonic() - started:.1f} s; state in {args.state}")
    print(f"SESSION_STORE_REDIS_URLS={cluster.state.redis_urls}")
    print("targets: " + ",".join(cluster.state.targets))
    print()
    print(status_table(cluster))
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    """Stop every process of the state file; report what needed SIGKILL."""
    cluster = _load(args.state)
    if cluster is None:
        print(f"cluster: no state file {args.state}: nothing to stop")
        return 0
    results = cluster.stop(grace=args.grace)
    for role, name, pid, outcome in results:
        print(f"{role:<5} {name:<4} pid {pid:>8}: {outcome}")
    killed = [f"{name} (pid {pid})" for _, name, pid, outcome in results if outcome == "killed"]
    stuck = [f"{name} (pid {pid})" for _, name, pid, outcome in results if outcome == "unkillable"]
    if killed:
        print("had to SIGKILL: " + ", ".join(killed))
    if stuck:
        print("STILL RUNNING: " + ", ".join(stuck), file=sys.stderr)
        return 1
    args.state.unlink()
    print("cluster down")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    """Print the one-screen status."""
    cluster = _load(args.state)
    if cluster is None:
        print(f"cluster: no state file {args.state}")
        return 1
    print(status_table(cluster))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run it; returns the exit code."""
    parser = argparse.ArgumentParser(prog="cluster.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--state", type=Path, default=DEFAULT_STATE, help="state file (JSON)")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start shards and nodes, wait until healthy, write the state file")
    up.add_argument("--shards", type=int, default=3)
    up.add_argument("--nodes", type=int, default=2)
    up.add_argument("--test-clock", action="store_true", help="start nodes with --test-clock (synced)")
    up.add_argument("--appendfsync", choices=APPENDFSYNC_CHOICES, default=DEFAULT_APPENDFSYNC)
    up.add_argument(
        "--replicas", type=int, default=0, help="replicas per shard (--sentinels or --cluster-mode)"
    )
    up.add_argument("--sentinels", type=int, default=0, help="sentinels watching every shard's group")
    up.add_argument("--cluster-mode", action="store_true", help="one Redis Cluster of --shards primaries")
    down = sub.add_parser("down", help="stop exactly the processes of the state file")
    down.add_argument("--grace", type=float, default=10.0, help="seconds from SIGTERM to SIGKILL")
    sub.add_parser("status", help="one-screen view of shards and nodes")
    args = parser.parse_args(argv)
    configure_logging("warning", json=False)
    try:
        return {"up": cmd_up, "down": cmd_down, "status": cmd_status}[args.command](args)
    except ValueError as exc:  # a damaged state file
        print(f"cluster: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
