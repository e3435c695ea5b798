"""Session events: the shards' event streams decoded (`stream`), fanned out to watchers (`watch`), and
the expiry sweeper that appends `expired` events (`sweeper`).

This package imports nothing at load time so that `session_store.events.stream` (pure, re-exported by
the package root) stays light for client-only users.
"""
