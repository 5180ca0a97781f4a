"""One version everywhere: pyproject.toml, hrseg.__version__ and `hrseg --version`."""

from __future__ import annotations

import re
from pathlib import Path

import hrseg
from tests.cli_fixtures import invoke

ROOT = Path(__file__).resolve().parents[1]


def test_the_version_is_the_same_in_pyproject_the_package_and_the_cli() -> None:
    declared = re.search(r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.M)
    assert declared is not None and declared.group(1) == hrseg.__version__ == "0.3.0"
    out = invoke("--version")
    assert out.exit_code == 0 and out.output.strip() == f"hrseg {hrseg.__version__}"


def test_the_changelog_has_a_section_for_this_version_under_unreleased() -> None:
    headings = re.findall(r"^## \[([^\]]+)\]", (ROOT / "CHANGELOG.md").read_text(), re.M)
    assert headings[:2] == ["Unreleased", hrseg.__version__]
