"""Release hygiene (issue #31): one version, read from sharpness/__init__.py, with its CHANGELOG entry."""

import tomllib
from pathlib import Path

import sharpness

ROOT = Path(__file__).resolve().parents[1]


def test_the_version_has_one_source_and_a_changelog_entry():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert "version" not in project["project"] and "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "sharpness.__version__"}
    headings = [line for line in (ROOT / "CHANGELOG.md").read_text(encoding="utf-8").splitlines() if line.startswith("## ")]
    if headings[0] == "## Unreleased":  # changes merged since the release sit above it
        headings = headings[1:]
    assert headings[0] == f"## {sharpness.__version__}", headings[:2]


def test_ci_installs_the_built_wheel():
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    smoke = (ROOT / ".ci" / "wheel_smoke").read_text(encoding="utf-8")
    assert "\n.ci/wheel_smoke\n" in ci
    for needed in ("pip wheel", "venv --system-site-packages", "--help", " analyze ", "sharpness.mplstyle"):
        assert needed in smoke, needed


def test_the_decision_log_gives_each_choice_its_reason_alternative_and_measurement():
    text = (ROOT / "docs" / "decisions.md").read_text(encoding="utf-8")
    entries = text.split("\n## ")[1:]
    titles = [e.splitlines()[0] for e in entries]
    for topic in ("miss certificate", "Ritz copies", "Convolutions", "Cross-entropy", "seed"):
        assert any(topic.lower() in t.lower() for t in titles), (topic, titles)
    for entry in entries:
        for part in ("**Choice.**", "**Why.**", "**Alternative.**", "**Measured.**"):
            assert part in entry, (entry.splitlines()[0], part)
    assert "decisions.md" in (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
