"""TOML config files load on every Python pyproject.toml allows: tomllib (3.11+) or, on 3.10, tomli."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from hrseg.errors import HrsegError
from hrseg.training.config import load_config_file

TOML = """scheme = "w19"
[optim]
lr = 0.005
iters = 7
[weighting]
levels = ["pixel", "image"]
clamp = 2.5
"""


def test_toml_loads_through_tomli_where_tomllib_is_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("tomli")  # a dev dependency (and a runtime one on 3.10)
    path = tmp_path / "c.toml"
    path.write_text(TOML)
    with_stdlib = load_config_file(path)
    monkeypatch.setitem(sys.modules, "tomllib", None)  # what Python 3.10 looks like: import tomllib fails
    with_tomli = load_config_file(path)
    assert with_tomli == with_stdlib
    assert (with_tomli.scheme, with_tomli.optim.lr, with_tomli.optim.iters) == ("w19", 0.005, 7)
    assert with_tomli.weighting.levels == ("pixel", "image") and with_tomli.weighting.clamp == 2.5
    (tmp_path / "bad.toml").write_text("scheme = \n")
    with pytest.raises(HrsegError, match=r"bad.toml: not valid TOML"):
        load_config_file(tmp_path / "bad.toml")


def test_without_any_toml_parser_the_error_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "c.toml"
    path.write_text(TOML)
    monkeypatch.setitem(sys.modules, "tomllib", None)
    monkeypatch.setitem(sys.modules, "tomli", None)
    with pytest.raises(HrsegError, match=r"^reading TOML needs Python 3.11\+ or the tomli package \(pip install tomli\)$"):
        load_config_file(path)
