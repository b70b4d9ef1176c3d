"""What a user installs: the license, the version in one place, a command line with ``--version`` and readable
help."""
from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

import collapse_guard
from collapse_guard.cli import main

ROOT = Path(__file__).resolve().parents[1]


def test_license_file_and_spdx_expression():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == "Apache-2.0" and project["license-files"] == ["LICENSE"]
    assert "Apache License" in (ROOT / "LICENSE").read_text() and "Version 2.0" in (ROOT / "LICENSE").read_text()
    assert project["classifiers"] and project["keywords"]


def test_version_is_written_once_and_the_command_line_says_it(capsys):
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" in config["project"]["dynamic"]
    assert config["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "collapse_guard.__version__"}
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.strip() == f"collapse-guard {collapse_guard.__version__}"


@pytest.mark.parametrize("argv", [["--help"], ["report", "--help"], ["demo", "--help"]])
def test_help_has_no_markup(argv, capsys):
    with pytest.raises(SystemExit):
        main(argv)
    out = capsys.readouterr().out
    assert "usage: collapse-guard" in out and "``" not in out and ":class:" not in out


def test_hugging_face_and_scikit_learn_are_extras_not_requirements():
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = [d.split(">")[0].split("=")[0].split("[")[0].strip() for d in project["dependencies"]]
    assert "datasets" not in names and "scikit-learn" not in names and "rich" not in names
    extras = project["optional-dependencies"]
    assert any(d.startswith("datasets") for d in extras["hf"]) and any(d.startswith("scikit-learn") for d in extras["demo"])


def test_a_missing_optional_package_names_its_extra(monkeypatch):
    import sys

    from collapse_guard._optional import require

    for name in [m for m in sys.modules if m == "sklearn" or m.startswith("sklearn.")] + ["sklearn"]:
        monkeypatch.setitem(sys.modules, name, None)  # import fails as if it were not installed
    with pytest.raises(ImportError, match=r"the real digits of the demo needs `sklearn`.*collapse-guard\[demo\]"):
        require("sklearn.datasets", "demo", "the real digits of the demo")
