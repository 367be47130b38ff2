"""stepfuncproject CDKTF app: validates settings, then synthesizes one Terraform stack per environment.

    pipenv run python main.py                       # every environment in config/environments.json
    pipenv run python main.py --environment dev     # just one
The cdktf CLI runs this too (cdktf.json), so `cdktf synth|diff|deploy` work as usual.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from modules import fast_import

fast_import.enable()  # before anything imports cdktf: see modules/fast_import.py

from modules import ca_bundle  # noqa: E402
from modules.settings import BACKEND_FILE, ENVIRONMENTS_FILE, SettingsError, load_backend, load_settings  # noqa: E402


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--environment", "-e", action="append", help="environment to synthesize (repeatable)")
    parser.add_argument("--settings", type=Path, default=ENVIRONMENTS_FILE, help="per-environment overrides file")
    parser.add_argument("--backend", type=Path, default=BACKEND_FILE, help="S3 backend settings file")
    parser.add_argument("--bootstrap-state", action="store_true",
                        help="first apply of the state backend only: its state in a local file, to migrate after")
    parser.add_argument("--allow-state-destroy", action="store_true",
                        help="retiring the state backend only: lift the bucket's and lock table's destroy guards")
    parser.add_argument("--outdir", type=Path, default=Path(os.environ.get("CDKTF_OUTDIR", "cdktf.out")))
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:  # everything is validated before the first construct, so bad settings write nothing
        settings = load_settings(args.settings, args.environment)
        backend = load_backend(args.backend)
        bundle = None
        if any(each.database.tls == "verify-full" for each in settings):
            bundle = ca_bundle.load()
    except (SettingsError, ca_bundle.CaBundleError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if bundle is not None and bundle.stand_in:
        print(f"note: the functions verify the database with {bundle.path}, the tests' stand-in CA: these stacks "
              "cannot reach an RDS database (README, \"Database access\")", file=sys.stderr)
    from modules.app import synthesize

    for folder in synthesize(settings, args.outdir, backend, args.allow_state_destroy,
                             args.bootstrap_state, bundle):
        print(f"synthesized {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
