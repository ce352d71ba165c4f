"""The README's promises that can drift: its commands, its size, its sections and its links."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).parents[1]
README = (ROOT / "README.md").read_text()
MAX_BYTES = 12 * 1024

#: Links to files another branch is writing; each leaves this set once its file has landed.
PENDING_LINKS: set[str] = set()

SECTIONS = [
    "## What this is",
    "## Endpoints",
    "## Clients",
    "### Clients and gateways",
    "## Training losses",
    "## Training",
    "## Documentation",
]
DOCS = [
    "docs/api.md",
    "docs/client.md",
    "docs/model-families.md",
    "docs/serving.md",
    "docs/training.md",
    "docs/deployment.md",
    "docs/development.md",
    "docs/configuration.md",
    "docs/benchmarks.md",
    "docs/many-machines.md",
]


def _bash_blocks(text: str) -> list[str]:
    return re.findall(r"```bash\n(.*?)```", text, flags=re.S)


def _local_links(path: Path) -> list[str]:
    text = path.read_text()
    targets = re.findall(r"\]\(([^)\s]+)\)", text)
    return [t for t in targets if not re.match(r"[a-z]+:", t) and not t.startswith("#")]


def test_readme_opens_with_serve_and_test_commands_and_ci_runs_the_test_one():
    first, second = (b.strip() for b in _bash_blocks(README)[:2])
    assert "reranker-server" in first and "deploy/install.sh" in first
    assert "pytest" in second
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()
    assert ci[-1].strip() == second


def test_readme_documents_the_quick_command_next_to_the_full_one():
    assert _bash_blocks(README)[2].strip() == ".venv/bin/python -m pytest tests/fast"


def test_readme_is_at_most_12_kb():
    assert len(README.encode()) <= MAX_BYTES, f"README.md is {len(README.encode())} bytes"


def test_readme_has_its_sections_in_order():
    headings = re.findall(r"^#{2,3} .*$", README, flags=re.M)
    positions = [headings.index(s) for s in SECTIONS]  # ValueError names a missing one
    assert positions == sorted(positions)


def test_readme_links_every_doc():
    linked = set(_local_links(ROOT / "README.md"))
    assert set(DOCS) <= {t.split("#")[0] for t in linked}


def test_local_links_of_the_readme_and_docs_resolve():
    broken = []
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for target in _local_links(page):
            resolved = (page.parent / target.split("#")[0]).resolve()
            name = resolved.relative_to(ROOT).as_posix() if resolved.is_relative_to(ROOT) else ""
            if not resolved.exists() and name not in PENDING_LINKS:
                broken.append(f"{page.relative_to(ROOT)} -> {target}")
    assert not broken, broken
