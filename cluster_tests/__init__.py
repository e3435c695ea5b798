"""Cluster storm tests: local clusters, simulated identity nodes, faults, a history and its checker.

Modules: `cluster` (start, fault and stop Redis shards and service nodes by PID), `history` (the
recorded operations), `workload` (simulated identity nodes and the event watcher), `checker` (pure:
history in, violations out), `report` (summary and PNG timeline), `scenarios` and `storm` (the
runner behind ``python -m cluster_tests``). See cluster_tests/README.md.
"""
