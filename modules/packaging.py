"""Deterministic deployment packages for the functions and the shared layer.

The same source tree gives the same zip bytes on any machine (sorted entries, fixed timestamps and
modes, no caches), so asset hashes, `source_code_hash` and the golden files are stable and a
re-synth without a code change never redeploys a function.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import subprocess
import sys
import threading
import zipfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUILD_DIR = ROOT / ".build"
LAYER_REQUIREMENTS = ROOT / "layer" / "requirements.txt"
_FIXED_TIME = (1980, 1, 1, 0, 0, 0)
_SKIPPED_DIRS = {"__pycache__", ".pytest_cache", ".mypy_cache"}
_SKIPPED_SUFFIXES = {".pyc", ".pyo"}
# pip's install bookkeeping that varies with the pip version or the machine, not with the package.
_SKIPPED_DIST_INFO = {"RECORD", "INSTALLER", "REQUESTED", "direct_url.json"}
_PLATFORM_TAG = {"arm64": "manylinux2014_aarch64", "x86_64": "manylinux2014_x86_64"}


@dataclass(frozen=True)
class Package:
    """A built zip and the base64 SHA-256 Lambda expects as `source_code_hash`."""

    path: Path
    sha256_base64: str


def _included(relative: Path) -> bool:
    if any(part in _SKIPPED_DIRS for part in relative.parts[:-1]) or relative.suffix in _SKIPPED_SUFFIXES:
        return False
    parent = relative.parent.name
    return not (parent.endswith(".dist-info") and relative.name in _SKIPPED_DIST_INFO)


def _entries(roots: list[tuple[Path, str]]) -> dict[str, Path]:
    """Archive name -> file, from (folder, prefix inside the zip) pairs; later roots never override."""
    entries: dict[str, Path] = {}
    for folder, prefix in roots:
        for file in folder.rglob("*"):
            relative = file.relative_to(folder)
            if file.is_file() and _included(relative):
                name = f"{prefix}{relative.as_posix()}"
                if name in entries:
                    raise ValueError(f"{name} is provided twice ({entries[name]} and {file})")
                entries[name] = file
    return entries


def write_zip(roots: list[tuple[Path, str]], target: Path, files: dict[str, Path] | None = None) -> Package:
    entries = _entries(roots)
    for name, file in (files or {}).items():
        if name in entries:
            raise ValueError(f"{name} is provided twice ({entries[name]} and {file})")
        entries[name] = file
    if not entries:
        raise ValueError(f"nothing to package in {', '.join(str(folder) for folder, _ in roots)}")
    target.parent.mkdir(parents=True, exist_ok=True)
    # a name of this process's own: parallel synths (pytest-xdist, several checkouts' tools) share .build/
    partial = target.with_name(f"{target.stem}.{os.getpid()}.{threading.get_ident()}.partial")
    with zipfile.ZipFile(partial, "w") as archive:
        for name in sorted(entries):
            info = zipfile.ZipInfo(name, date_time=_FIXED_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.create_system = 3
            info.external_attr = (0o100755 if entries[name].stat().st_mode & 0o111 else 0o100644) << 16
            archive.writestr(info, entries[name].read_bytes(), compresslevel=9)
    digest = hashlib.sha256(partial.read_bytes()).digest()
    partial.replace(target)
    return Package(target, base64.b64encode(digest).decode())


def package_function(source: Path, target: Path) -> Package:
    """Zip a function folder with its files at the zip root (handler.py -> handler.handler)."""
    if not (source / "handler.py").is_file():
        raise FileNotFoundError(f"{source}/handler.py is missing: every function folder needs one")
    return write_zip([(source, "")], target)


def layer_dependencies(architecture: str, requirements: Path = LAYER_REQUIREMENTS,
                       python_version: str = "3.13") -> Path | None:
    """Third-party wheels for the Lambda platform, installed once per requirements file content.

    Cached under .build/ by the hash of the requirements and the target platform, so only the first
    synth after a change needs the package index.
    """
    if not requirements.is_file():
        return None
    key = hashlib.sha256(requirements.read_bytes() + f"{architecture}/{python_version}".encode()).hexdigest()[:16]
    # A tree appears at `target` only by renaming a finished install into place, so its presence means
    # complete, also with concurrent synths. ("layer-deps-v2": older versions installed in place.)
    target = BUILD_DIR / "layer-deps-v2" / key
    if target.is_dir():
        return target
    staging = target.with_name(f"{key}.{os.getpid()}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    command = [
        sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-compile",
        "--target", str(staging), "--platform", _PLATFORM_TAG[architecture], "--implementation", "cp",
        "--python-version", python_version, "--only-binary=:all:", "--require-hashes", "-r", str(requirements),
    ]
    completed = subprocess.run(command, capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        shutil.rmtree(staging, ignore_errors=True)
        raise RuntimeError(f"building layer dependencies from {requirements} failed:\n{completed.stderr.strip()}")
    try:
        staging.rename(target)
    except OSError:  # another process finished first: its tree is identical
        shutil.rmtree(staging, ignore_errors=True)
    return target


def package_layer(source: Path, target: Path, architecture: str, files: dict[str, Path] | None = None) -> Package:
    """Zip the layer with its `python/` root: our package from layer/python plus pinned dependencies, plus
    `files` (archive name -> file; e.g. the RDS CA bundle, /opt/<name> in the functions)."""
    python_root = source / "python"
    if not python_root.is_dir():
        raise FileNotFoundError(f"{python_root} is missing: the layer's code lives under layer/python/")
    roots = [(python_root, "python/")]
    dependencies = layer_dependencies(architecture, source / "requirements.txt")
    if dependencies is not None:
        roots.append((dependencies, "python/"))
    return write_zip(roots, target, files)
