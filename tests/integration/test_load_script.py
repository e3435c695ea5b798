"""scripts/load.py end to end: it starts its own service, drives the mix, writes CSV and PNG, stops."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]


class TestLoadScript:
    def test_a_short_run_writes_one_csv_row_per_second_and_a_plot(self, tmp_path: Path) -> None:
        """A 3 s run at 100 ops/s of the default mix has 3 rows, ~300 ops, no errors, and a PNG."""
        out = tmp_path / "load"
        result = subprocess.run(  # noqa: S603 - our own interpreter and script, no shell
            [
                sys.executable,
                str(ROOT / "scripts" / "load.py"),
                "--start",
                "--rate",
                "100",
                "--duration",
                "3",
                "--max-ops",
                "1000",
                "--concurrency",
                "8",
                "--channels",
                "2",
                "--out",
                str(out),
            ],
            capture_output=True,
            text=True,
            timeout=80,
            check=False,
        )
        assert 0 == result.returncode, result.stderr[-2000:]
        with (out / "load.csv").open(encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        assert [0, 1, 2] == [int(r["second"]) for r in rows]
        # Slots are paced at 10 ms; a busy machine may start the last few after the 3 s bound.
        assert 250 <= sum(int(r["ops"]) for r in rows) <= 300, rows
        assert [0, 0, 0] == [int(r["errors"]) for r in rows]
        assert all(float(r["p50_ms"]) <= float(r["p99_ms"]) for r in rows)
        assert (out / "load.png").read_bytes().startswith(b"\x89PNG")
        assert "errors 0" in result.stdout
