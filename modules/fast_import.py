"""Load the prebuilt AWS provider bindings lazily, without changing what they synthesize.

The stock provider package's `__init__.py` (`cdktf_cdktf_provider_aws`, or CDK Terrain's `cdktn_provider_aws`)
imports all ~2,200 resource submodules in Python, and the jsii runtime's node process then `require`s every
matching JavaScript module: together 10-25 s per process here. A stack uses a few dozen of them.
`enable()` must run before the CDK (cdktf or cdktn, modules/cdk_flavour.py) is first imported:
- Python: the package `__init__` runs without its trailing `from . import <submodule>` lines; submodules
  load on first import (or attribute access, through a module `__getattr__`).
- Node: NODE_OPTIONS preloads `lazy_provider_index.js`, which turns the provider's `lib/index.js`
  exports into getters that `require` on first use.
Set STEPFUNC_STOCK_IMPORT=1 to use the stock path (the byte-identity test and bench/ compare both).
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import os
import re
import sys
from pathlib import Path
from importlib.machinery import ModuleSpec
from types import ModuleType

from modules.cdk_flavour import selected

FLAVOUR = selected()
PROVIDER_PACKAGE = FLAVOUR.provider_package
STOCK_IMPORT_ENV = "STEPFUNC_STOCK_IMPORT"
NODE_PRELOAD = Path(__file__).with_name("lazy_provider_index.js")
_EAGER_SUBMODULE_IMPORT = re.compile(r"^from \. import \w+\n", re.MULTILINE)
_QUIET_JSII = {  # Node 20 still runs jsii 1.x correctly; the banner is noise in every synth.
    "JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION": "1",
    "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "20",
    "JSII_SILENCE_WARNING_UNTESTED_NODE_VERSION": "1",
}


def stock_import_requested() -> bool:
    return os.environ.get(STOCK_IMPORT_ENV, "") not in ("", "0")


def enable() -> bool:
    """Install the lazy loaders; returns False when the stock path is in use or it is too late."""
    for name, value in _QUIET_JSII.items():
        os.environ.setdefault(name, value)
    if stock_import_requested() or PROVIDER_PACKAGE in sys.modules:
        return False
    if FLAVOUR.core_package not in sys.modules:  # the jsii node process starts with the CDK's import
        preload = f'--require "{NODE_PRELOAD}"'
        node_options = os.environ.get("NODE_OPTIONS", "")
        if preload not in node_options:
            os.environ["NODE_OPTIONS"] = f"{node_options} {preload}".strip()
    if not any(isinstance(finder, _LazyProviderFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _LazyProviderFinder())
    return True


class _LazyProviderFinder(importlib.abc.MetaPathFinder):
    """Hands the provider package to _LazyProviderLoader when (and only when) something imports it."""

    def find_spec(self, fullname: str, path: object = None, target: object = None) -> ModuleSpec | None:
        if fullname != PROVIDER_PACKAGE:
            return None
        sys.meta_path.remove(self)  # find the real package with the remaining finders
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.origin is None:
            return spec
        spec.loader = _LazyProviderLoader()
        return spec


class _LazyProviderLoader(importlib.abc.Loader):
    def exec_module(self, module: ModuleType) -> None:
        origin = module.__spec__.origin
        source = Path(origin).read_text(encoding="utf-8")
        exec(compile(_EAGER_SUBMODULE_IMPORT.sub("", source), origin, "exec"), module.__dict__)
        # The package ends with publication.publish(), which swaps in a public module object.
        package = sys.modules[PROVIDER_PACKAGE]
        submodules = frozenset(getattr(package, "__all__", ()))

        def load_submodule_on_access(name: str) -> ModuleType:
            if name in submodules:
                return importlib.import_module(f"{PROVIDER_PACKAGE}.{name}")
            raise AttributeError(f"module {PROVIDER_PACKAGE!r} has no attribute {name!r}")

        package.__getattr__ = load_submodule_on_access  # type: ignore[attr-defined]
