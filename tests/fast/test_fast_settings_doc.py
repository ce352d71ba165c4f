"""docs/configuration.md is generated from ``Settings`` and must not drift from it."""

from __future__ import annotations

from pathlib import Path

import pytest
from reranker_server import settings_doc
from reranker_server.settings import Settings

pytestmark = pytest.mark.fast

ROOT = Path(__file__).parents[2]


def test_the_configuration_reference_is_what_settings_generates():
    written = (ROOT / settings_doc.DOC_PATH).read_text()
    assert written == settings_doc.render(), (
        "docs/configuration.md is out of date: run `python -m reranker_server.settings_doc`"
    )


def test_every_setting_is_described_and_listed():
    text = settings_doc.render()
    for name, field in Settings.model_fields.items():
        assert field.description, f"Settings.{name} has no description"
        assert f"| `{name.upper()}` |" in text


def test_check_fails_on_a_drifted_file_and_passes_once_regenerated(tmp_path):
    path = tmp_path / "configuration.md"
    path.write_text(settings_doc.render().replace("`256`", "`128`"))
    assert settings_doc.main(["--check", "--path", str(path)]) == 1
    assert settings_doc.main(["--path", str(path)]) == 0
    assert settings_doc.main(["--check", "--path", str(path)]) == 0
