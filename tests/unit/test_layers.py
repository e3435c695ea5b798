"""Layering: `model/` is pure and `storage/` never touches gRPC, checked on the source with `ast`."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

import session_store

PACKAGE_ROOT = Path(session_store.__file__).parent

MODEL_FORBIDDEN = (
    "session_store.storage",
    "session_store.api",
    "session_store.client",
    "session_store.events",
    "session_store.security",
    "session_store.server",
    "session_store.v1",
    "grpc",
    "redis",
)
MODEL_FIRST_PARTY_ALLOWED = ("session_store.model", "session_store.errors")
STORAGE_FORBIDDEN = (
    "grpc",
    "grpc_health",
    "grpc_reflection",
    "grpc_status",
    "session_store.api",
    "session_store.client",
    "session_store.server",
    "session_store.v1",
)


def module_name(path: Path) -> str:
    """The dotted name of a module file of the package."""
    parts = path.relative_to(PACKAGE_ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(source: str, module: str, *, is_package: bool = False) -> set[str]:
    """Every module a source imports, relative imports resolved, including `import_module("x")` calls."""
    package = module if is_package else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                prefix = ".".join([*base, node.module] if node.module else base)
            else:
                prefix = node.module or ""
            found.add(prefix)
            # `from pkg import sub` may import the submodule pkg.sub.
            found.update(f"{prefix}.{alias.name}" for alias in node.names)
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", getattr(node.func, "id", "")) in ("import_module", "__import__")
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            found.add(node.args[0].value)
    return found


def imports_of(package: str) -> dict[str, set[str]]:
    """Module name -> imported modules, for every module file under a subpackage."""
    root = PACKAGE_ROOT.joinpath(*package.split(".")[1:])
    result = {}
    for path in sorted(root.rglob("*.py")):
        name = module_name(path)
        result[name] = imported_modules(
            path.read_text(encoding="utf-8"), name, is_package=path.name == "__init__.py"
        )
    return result


def violations(imports: dict[str, set[str]], forbidden: tuple[str, ...]) -> dict[str, list[str]]:
    """Module -> the forbidden modules it imports (itself or a submodule of one)."""
    bad = {
        module: sorted(i for i in found if any(i == f or i.startswith(f + ".") for f in forbidden))
        for module, found in imports.items()
    }
    return {module: names for module, names in bad.items() if names}


class TestImportCollector:
    @pytest.mark.parametrize(
        ("source", "expected"),
        [
            ("import grpc.aio", "grpc.aio"),
            ("from redis import asyncio", "redis.asyncio"),
            ("from ..storage import keys", "session_store.storage.keys"),
            ("from . import ids", "session_store.model.ids"),
            ("from .ids import PARTITION_COUNT", "session_store.model.ids"),
            ("import importlib\nimportlib.import_module('grpc')", "grpc"),
            ("def f():\n    import redis\n", "redis"),
        ],
    )
    def test_collector_sees_every_form_of_import(self, source: str, expected: str) -> None:
        """Absolute, relative, nested and import_module imports are all collected, resolved."""
        assert expected in imported_modules(source, "session_store.model.policy")

    def test_collector_finds_the_known_imports_of_a_real_module(self) -> None:
        """The collector finds the imports of model/policy.py that are plainly there."""
        assert {"session_store.errors", "session_store.model.ids"} <= imports_of("session_store.model")[
            "session_store.model.policy"
        ]


class TestModelLayer:
    def test_model_imports_no_other_layer_nor_grpc_or_redis(self) -> None:
        """Nothing in model/ imports storage, api, client, events, security, server, grpc or redis."""
        assert {} == violations(imports_of("session_store.model"), MODEL_FORBIDDEN)

    def test_model_imports_only_the_standard_library_and_itself(self) -> None:
        """model/ is pure: besides the standard library it imports only model/ and the error tree."""
        outside = {
            module: sorted(
                i
                for i in found
                if i.split(".")[0] not in sys.stdlib_module_names
                and i != "__future__"
                and not any(i == a or i.startswith(a + ".") for a in MODEL_FIRST_PARTY_ALLOWED)
            )
            for module, found in imports_of("session_store.model").items()
        }

        assert {} == {module: names for module, names in outside.items() if names}


class TestStorageLayer:
    def test_storage_never_imports_grpc(self) -> None:
        """Nothing in session_store/storage imports grpc, the generated stubs, or the layers above it."""
        assert {} == violations(imports_of("session_store.storage"), STORAGE_FORBIDDEN)

    def test_storage_modules_are_all_checked(self) -> None:
        """The check covers the storage modules that exist, sessions and keys included."""
        assert {"session_store.storage.keys", "session_store.storage.sessions"} <= set(
            imports_of("session_store.storage")
        )
