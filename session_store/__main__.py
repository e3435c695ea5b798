"""`python -m session_store` runs the command line."""

from __future__ import annotations

from session_store.cli import main

raise SystemExit(main())
