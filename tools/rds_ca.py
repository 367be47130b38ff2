"""Fetch, pin and check the RDS CA bundle the functions verify the database with (modules/ca_bundle.py).

    python -m tools.rds_ca fetch          # download AWS's bundle into certs/ with its SHA-256 pin (`make rds-ca`)
    python -m tools.rds_ca fetch --accept-new   # AWS published a new bundle: take it after reviewing the list
    python -m tools.rds_ca check [--deployable] # the bundle matches its pin; --deployable: and it is AWS's

The download is verified by HTTPS against the public web PKI (truststore.pki.rds.amazonaws.com has a publicly
trusted certificate, which is how AWS documents fetching it). A bundle that differs from the committed pin is not
written unless --accept-new says so: a change of CAs is reviewed in a pull request, like a dependency bump.
Exit status: 0 ok, 1 refused or failed (the message says why).
"""

from __future__ import annotations

import argparse
import ssl
import sys
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from modules import ca_bundle  # noqa: E402

MAX_BYTES = 1 << 20  # the global bundle is about 160 KB


def download(url: str = ca_bundle.SOURCE_URL, timeout: float = 30.0, cafile: str | None = None) -> bytes:
    """The bundle at `url`, over HTTPS verified against the system's public trust store (`cafile`: tests)."""
    context = ssl.create_default_context(cafile=cafile)
    with urllib.request.urlopen(url, timeout=timeout, context=context) as response:  # noqa: S310 - https only
        data = response.read(MAX_BYTES + 1)
    if len(data) > MAX_BYTES:
        raise ca_bundle.CaBundleError(f"{url} answered more than {MAX_BYTES} bytes: not the RDS CA bundle")
    return data


def fetch(target: Path, data: bytes, *, source: str, accept_new: bool, out=print) -> int:
    """Write `data` as the bundle and its pin; refuse a bundle other than the pinned one unless accept_new."""
    subjects, expiry = ca_bundle.describe(data, source)
    if any(ca_bundle.STAND_IN_MARK in subject for subject in subjects):
        raise ca_bundle.CaBundleError(f"{source} is a stand-in test CA, not AWS's RDS bundle")
    digest = ca_bundle.sha256_of(data)
    pin = ca_bundle.pin_path(target)
    pinned = ca_bundle.pinned_sha256(target)
    out(f"{source}: {len(subjects)} CA certificates, SHA-256 {digest}, last expiry {expiry:%Y-%m-%d}")
    for subject in subjects:
        out(f"  {subject}")
    if pinned and pinned != digest and not accept_new:
        out(f"refused: the pinned bundle ({pin}) is SHA-256 {pinned}. If AWS published a new bundle, review "
            "the list above and run again with --accept-new; commit both files.")
        return 1
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    pin.write_text(f"{digest}  {target.name}\n", encoding="ascii")
    out(f"wrote {target} and {pin}: commit both")
    return 0


def check(path: Path, *, deployable: bool, out=print) -> int:
    bundle = ca_bundle.load(path)
    if deployable and bundle.stand_in:
        raise ca_bundle.CaBundleError(f"{path} is the tests' stand-in CA: a stack built with it cannot reach an "
                                      f"RDS database. Unset {ca_bundle.BUNDLE_VARIABLE} and run `make rds-ca`")
    out(f"{path}: matches its pin ({bundle.sha256[:16]}…), {len(bundle.subjects)} CA certificates"
        f"{' (stand-in: tests only)' if bundle.stand_in else ''}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.rds_ca", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    fetch_parser = sub.add_parser("fetch", help="download AWS's bundle and pin it")
    fetch_parser.add_argument("--url", default=ca_bundle.SOURCE_URL)
    fetch_parser.add_argument("--from-file", type=Path, help="take the bundle from this file instead of the URL")
    fetch_parser.add_argument("--accept-new", action="store_true", help="replace a bundle that differs from the pin")
    check_parser = sub.add_parser("check", help="the bundle matches its pin")
    check_parser.add_argument("--deployable", action="store_true", help="and is not the tests' stand-in")
    args = parser.parse_args(argv)
    target = ca_bundle.bundle_path()
    try:
        if args.command == "check":
            return check(target, deployable=args.deployable)
        if args.from_file:
            data, source = args.from_file.read_bytes(), str(args.from_file)
        else:
            if not args.url.startswith("https://"):
                raise ca_bundle.CaBundleError(f"--url must be https, got {args.url}")
            data, source = download(args.url), args.url
        return fetch(target, data, source=source, accept_new=args.accept_new)
    except ca_bundle.CaBundleError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # URLError is an OSError: no network, DNS, TLS verification of the download
        print(f"error: cannot download {args.url}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
