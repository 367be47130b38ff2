"""Running Terraform from our scripts and tests: CLI config for an offline provider mirror, no prompts."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

PROVIDER_MIRROR = Path(os.environ.get("TF_PROVIDER_MIRROR", "/opt/tf-plugins"))


def terraform_env(scratch: Path) -> dict[str, str]:
    """Environment for terraform. Where a provider mirror exists (offline build machines) it is used for
    hashicorp providers; elsewhere terraform downloads providers as usual."""
    env = dict(os.environ, TF_IN_AUTOMATION="1", TF_INPUT="0", CHECKPOINT_DISABLE="1")
    if (PROVIDER_MIRROR / "registry.terraform.io").is_dir():
        config = scratch / "terraform.rc"
        config.write_text(
            "provider_installation {\n"
            f'  filesystem_mirror {{\n    path    = "{PROVIDER_MIRROR}"\n'
            '    include = ["registry.terraform.io/hashicorp/*"]\n  }\n'
            '  direct {\n    exclude = ["registry.terraform.io/hashicorp/*"]\n  }\n}\n')
        env["TF_CLI_CONFIG_FILE"] = str(config)
    elif env.get("TF_CLI_CONFIG_FILE") and not Path(env["TF_CLI_CONFIG_FILE"]).exists():
        env.pop("TF_CLI_CONFIG_FILE")  # a dangling config file breaks every terraform command
    return env


def terraform_path() -> str | None:
    return shutil.which("terraform")


def run(binary: str, folder: Path, env: dict[str, str], *args: str,
        timeout: int = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([binary, *args], cwd=folder, env=env, capture_output=True, text=True, timeout=timeout,
                          check=False)
