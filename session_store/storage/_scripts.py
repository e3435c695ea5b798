"""Reads the Lua scripts once, with the shared prelude in front of each, and names them."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cache
from importlib import resources


@dataclass(frozen=True)
class Script:
    """One script: its name (the file name without .lua), full text and SHA1."""

    name: str
    text: str
    sha: str


@cache
def load_scripts() -> dict[str, Script]:
    """Every script of storage/scripts, keyed by name; read from the package once per process."""
    folder = resources.files("session_store.storage") / "scripts"
    prelude = (folder / "_prelude.lua").read_text(encoding="utf-8")
    scripts: dict[str, Script] = {}
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".lua") or entry.name.startswith("_"):
            continue
        name = entry.name.removesuffix(".lua")
        text = prelude + "\n" + entry.read_text(encoding="utf-8")
        scripts[name] = Script(name, text, hashlib.sha1(text.encode()).hexdigest())  # noqa: S324 - Redis names scripts by SHA1
    return scripts
