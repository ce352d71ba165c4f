"""The README's promises that can drift: its two commands and its configuration table."""

from __future__ import annotations

import re
from pathlib import Path

from reranker_server.settings import Settings

ROOT = Path(__file__).parents[1]
README = (ROOT / "README.md").read_text()


def _bash_blocks(text: str) -> list[str]:
    return re.findall(r"```bash\n(.*?)```", text, flags=re.S)


def test_readme_opens_with_serve_and_test_commands_and_ci_runs_the_test_one():
    first, second = (b.strip() for b in _bash_blocks(README)[:2])
    assert "reranker-server" in first and "deploy/install.sh" in first
    assert "pytest" in second
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()
    assert ci[-1].strip() == second


def test_configuration_table_lists_every_setting():
    section = README.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"^\| `([A-Z_]+)`", section, flags=re.M))
    documented |= {"HOST", "PORT"}  # share a row
    assert {name.upper() for name in Settings.model_fields} <= documented
