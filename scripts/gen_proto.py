"""Regenerate session_store/v1 from protos/ (with mypy-protobuf stubs); `--check` fails on drift."""

from __future__ import annotations

import argparse
import filecmp
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
OUT = ROOT / "session_store" / "v1"


def _generate(dest_root: Path) -> None:
    """Run protoc for every proto under protos/ into dest_root/session_store/v1."""
    bindir = Path(sys.executable).parent
    sources = sorted(str(p.relative_to(PROTOS)) for p in PROTOS.rglob("*.proto"))
    (dest_root / "session_store" / "v1").mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"-I{PROTOS}",
        f"--plugin=protoc-gen-mypy={bindir / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={bindir / 'protoc-gen-mypy_grpc'}",
        f"--python_out={dest_root}",
        f"--grpc_python_out={dest_root}",
        f"--mypy_out={dest_root}",
        f"--mypy_grpc_out={dest_root}",
        *sources,
    ]
    subprocess.run(cmd, check=True)  # noqa: S603 - fixed argv built from our own paths
    (dest_root / "session_store" / "v1" / "__init__.py").write_text(
        '"""Generated gRPC and protobuf code for session_store.v1 (do not edit; `make proto`)."""\n'
    )


def main() -> int:
    """Generate into the package, or with --check compare a fresh generation to the committed one."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail when committed code is stale")
    args = parser.parse_args()
    if not args.check:
        with tempfile.TemporaryDirectory() as tmp:
            _generate(Path(tmp))
            shutil.rmtree(OUT, ignore_errors=True)
            shutil.copytree(Path(tmp) / "session_store" / "v1", OUT)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        _generate(Path(tmp))
        fresh = Path(tmp) / "session_store" / "v1"
        names = sorted({p.name for p in fresh.iterdir()} | {p.name for p in OUT.iterdir()})
        stale = [
            n
            for n in names
            if n != "__pycache__"
            and (
                not (fresh / n).exists()
                or not (OUT / n).exists()
                or not filecmp.cmp(fresh / n, OUT / n, shallow=False)
            )
        ]
    if stale:
        print(f"generated code is stale, run `make proto`: {', '.join(stale)}", file=sys.stderr)
        return 1
    print("generated code is up to date")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
