"""docs/operations.md's configuration table is rendered from `ENV_VARS` and matches the parser."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType

from session_store import config
from session_store.config import ENV_VARS, Settings

ROOT = Path(__file__).resolve().parents[2]


def _gen() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_config_doc", ROOT / "scripts" / "gen_config_doc.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class TestConfigurationReference:
    def test_committed_table_matches_a_fresh_render(self) -> None:
        """The table in docs/operations.md is exactly what scripts/gen_config_doc.py renders now."""
        gen = _gen()
        document = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
        assert gen.splice(document, gen.render_table()) == document

    def test_registry_names_exactly_the_variables_the_parser_reads(self) -> None:
        """Every name `Settings.from_env` reads is in ENV_VARS, and ENV_VARS lists nothing else."""
        source = Path(config.__file__).read_text(encoding="utf-8")
        read = set(re.findall(r'\b(?:get|number|flag)\(\s*"([A-Z_]+)"', source))
        assert read == {var.name for var in ENV_VARS}

    def test_registry_defaults_are_the_parsers_defaults(self) -> None:
        """Parsing an environment that sets every variable to its documented default gives the defaults."""
        documented = {var.env_name: var.default for var in ENV_VARS}
        assert Settings() == Settings.from_env({}) == Settings.from_env(documented)

    def test_every_variable_appears_in_the_document(self) -> None:
        """Each variable has a row in the committed table."""
        document = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
        for var in ENV_VARS:
            assert f"| `{var.env_name}` |" in document
