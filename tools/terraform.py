"""Running Terraform from our scripts and tests: CLI config for an offline provider mirror, no prompts."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
from pathlib import Path

PROVIDER_MIRROR = Path(os.environ.get("TF_PROVIDER_MIRROR", "/opt/tf-plugins"))
ERROR_TAIL_LINES = 40


class TerraformError(Exception):
    """A terraform command exited with a code it was not allowed to; ``tail`` is the end of its output."""

    def __init__(self, command: str, returncode: int, tail: str) -> None:
        super().__init__(f"terraform {command} exited {returncode}:\n{tail}")
        self.command, self.returncode, self.tail = command, returncode, tail


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


def run_logged(binary: str, folder: Path, env: dict[str, str], *args: str, log: Path,
               timeout: float | None = None, ok_codes: tuple[int, ...] = (0,),
               stdout_to: Path | None = None) -> subprocess.CompletedProcess[str]:
    """terraform in its own process group (a timeout or Ctrl-C also ends its provider plugins), appending
    ``$ terraform ARGS``, its output and ``[exit N]`` to ``log``. With ``stdout_to`` the standard output
    goes to that file (once the command succeeded) instead of the log. An exit code outside ``ok_codes``
    raises TerraformError with the last lines of the output."""
    proc = subprocess.Popen([binary, *args], cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    stdout, stderr = communicate_or_kill_group(proc, timeout)
    shown = stdout if stdout_to is None else f"(stdout written to {stdout_to.name})\n"
    with log.open("a", encoding="utf-8") as fh:
        fh.write(f"$ terraform {' '.join(args)}\n{shown}{stderr}[exit {proc.returncode}]\n\n")
    if proc.returncode not in ok_codes:
        tail = "\n".join((stderr.strip() or stdout.strip()).splitlines()[-ERROR_TAIL_LINES:])
        raise TerraformError(args[0], proc.returncode, tail)
    if stdout_to is not None:
        stdout_to.write_text(stdout, encoding="utf-8")
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def communicate_or_kill_group(proc: subprocess.Popen[str], timeout: float | None) -> tuple[str, str]:
    """(stdout, stderr) of a process started in its own session; on a timeout or Ctrl-C its whole process group
    is killed (terraform leaves provider plugins running otherwise) before the exception goes on."""
    try:
        return proc.communicate(timeout=timeout)
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise


def copy_with_local_backend(stack_dir: Path, workdir: Path, override_name: str, state_path: Path) -> None:
    """A copy of a synthesized stack folder (without .terraform or state files) whose backend is a local
    state file at ``state_path``: an override file is added, the synthesized JSON is left as it is."""
    shutil.copytree(stack_dir, workdir, symlinks=True,
                    ignore=shutil.ignore_patterns(".terraform", "*.tfstate", "*.tfstate.backup"))
    (workdir / override_name).write_text(json.dumps(
        {"terraform": {"backend": {"local": {"path": str(state_path)}}}}, indent=2) + "\n")
