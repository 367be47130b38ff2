"""Deployment packages are deterministic and shaped the way Lambda loads them."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import pytest

from modules import packaging
from tests.support.synth import ROOT


def make_tree(folder: Path, mtime: int) -> Path:
    (folder / "pkg" / "__pycache__").mkdir(parents=True)
    (folder / "handler.py").write_text("def handler(event, context):\n    return {'success': True}\n")
    (folder / "pkg" / "__init__.py").write_text("VALUE = 1\n")
    (folder / "pkg" / "__pycache__" / "x.cpython-313.pyc").write_bytes(b"cache")
    (folder / "tool.sh").write_text("#!/bin/sh\n")
    (folder / "tool.sh").chmod(0o755)
    for path in folder.rglob("*"):
        os.utime(path, (mtime, mtime))
    return folder


def test_same_sources_give_the_same_bytes_whatever_the_timestamps(tmp_path: Path) -> None:
    first = packaging.package_function(make_tree(tmp_path / "a", 1_000_000_000), tmp_path / "a.zip")
    second = packaging.package_function(make_tree(tmp_path / "b", 1_700_000_000), tmp_path / "b.zip")
    assert first.path.read_bytes() == second.path.read_bytes()
    assert first.sha256_base64 == second.sha256_base64
    with zipfile.ZipFile(first.path) as archive:
        assert archive.namelist() == ["handler.py", "pkg/__init__.py", "tool.sh"]  # sorted, no caches
        assert {info.date_time for info in archive.infolist()} == {(1980, 1, 1, 0, 0, 0)}
        assert (archive.getinfo("tool.sh").external_attr >> 16) & 0o777 == 0o755


def test_a_changed_source_changes_the_hash(tmp_path: Path) -> None:
    before = packaging.package_function(make_tree(tmp_path / "a", 0), tmp_path / "a.zip")
    (tmp_path / "a" / "pkg" / "__init__.py").write_text("VALUE = 2\n")
    after = packaging.package_function(tmp_path / "a", tmp_path / "a2.zip")
    assert before.sha256_base64 != after.sha256_base64


def test_function_folder_without_handler_is_refused(tmp_path: Path) -> None:
    (tmp_path / "fn").mkdir()
    with pytest.raises(FileNotFoundError, match="handler.py is missing"):
        packaging.package_function(tmp_path / "fn", tmp_path / "fn.zip")
    assert not (tmp_path / "fn.zip").exists()


@pytest.mark.parametrize("folder", ["lambda_1", "lambda_2", "lambda_3", "lambda_error_handler"])
def test_each_function_package_has_its_handler_at_the_root(tmp_path: Path, folder: str) -> None:
    package = packaging.package_function(ROOT / "lambdas" / folder, tmp_path / f"{folder}.zip")
    with zipfile.ZipFile(package.path) as archive:
        assert "handler.py" in archive.namelist()
        assert "def handler(" in archive.read("handler.py").decode()


def test_layer_has_python_root_with_our_package_and_pinned_dependencies(tmp_path: Path) -> None:
    package = packaging.package_layer(ROOT / "layer", tmp_path / "layer.zip", "arm64")
    with zipfile.ZipFile(package.path) as archive:
        names = archive.namelist()
    assert all(name.startswith("python/") for name in names)
    assert "python/pagerduty_pipeline/__init__.py" in names
    assert any(name.startswith("python/pg8000/") for name in names)
    assert not any(name.endswith(("/RECORD", "/INSTALLER", ".pyc")) for name in names)
