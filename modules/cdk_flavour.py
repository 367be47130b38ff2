"""Which CDK synthesizes the app: CDKTF (the default) or CDK Terrain, its community fork.

HashiCorp archived CDKTF in December 2025; CDK Terrain (`cdktn`, `cdktn-provider-aws`) continues it under
new package names. This module only names the packages (it imports neither), so modules/fast_import.py can
prepare the provider package before the CDK's first import. modules/cdk.py imports them.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass

CDK_ENV = "STEPFUNC_CDK"  # "cdktf" or "cdktn"; unset: cdktf when it is installed, else cdktn


@dataclass(frozen=True)
class Flavour:
    name: str
    core_package: str  # App, TerraformStack, ...
    provider_package: str  # the prebuilt AWS provider bindings


FLAVOURS = {
    "cdktf": Flavour("cdktf", "cdktf", "cdktf_cdktf_provider_aws"),
    "cdktn": Flavour("cdktn", "cdktn", "cdktn_provider_aws"),
}


def selected() -> Flavour:
    """The flavour named by STEPFUNC_CDK, else the first one installed (cdktf before cdktn)."""
    requested = os.environ.get(CDK_ENV, "").strip()
    if requested:
        if requested not in FLAVOURS:
            raise RuntimeError(f"{CDK_ENV}={requested!r}: choose one of {', '.join(FLAVOURS)}")
        return FLAVOURS[requested]
    for flavour in FLAVOURS.values():
        if importlib.util.find_spec(flavour.core_package) is not None:
            return flavour
    raise RuntimeError("neither cdktf nor cdktn is installed (pipenv sync installs cdktf)")
