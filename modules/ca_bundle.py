"""The CA bundle the functions verify the database's TLS certificate with.

RDS signs its server certificates with its own certificate authorities, which are in no public trust store, so
the functions need AWS's bundle of them (https://truststore.pki.rds.amazonaws.com/global/global-bundle.pem,
AWS's "Using SSL/TLS to encrypt a connection to a DB instance"). It is a build input, like the layer's pinned
wheels: `make rds-ca` (tools/rds_ca.py) downloads it once, over HTTPS verified by the public web PKI, and writes
it with its SHA-256 pin to `certs/`; both are committed. Every synth checks the bundle against the pin and packs
it into the shared layer (`/opt/rds-ca/rds-ca-bundle.pem` in the functions). A synth that needs it and does not
find it stops with what to run. Standard library only: main.py checks it before loading the CDK.

`STEPFUNC_RDS_CA_BUNDLE` names another bundle (with its own `.sha256` pin next to it): the tests and the local
run use a stand-in CA of ours (tests/fixtures/tls/), since this project's CI machine cannot download AWS's.
"""

from __future__ import annotations

import hashlib
import os
import ssl
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_BUNDLE = ROOT / "certs" / "rds-ca-bundle.pem"
BUNDLE_VARIABLE = "STEPFUNC_RDS_CA_BUNDLE"
SOURCE_URL = "https://truststore.pki.rds.amazonaws.com/global/global-bundle.pem"
# Where the layer puts it (layers unpack under /opt) and so what DB_SSL_ROOT_CERT names in the functions.
ARCHIVE_NAME = "rds-ca/rds-ca-bundle.pem"
FUNCTION_PATH = f"/opt/{ARCHIVE_NAME}"
STAND_IN_MARK = "stand-in"  # in the subject of our test CA: such a bundle verifies no RDS database


class CaBundleError(ValueError):
    """The bundle is missing, altered or not a bundle of CA certificates; the message says what to do."""


@dataclass(frozen=True)
class CaBundle:
    path: Path
    sha256: str
    subjects: tuple[str, ...]  # common names of the certificates, in file order
    latest_expiry: datetime  # AWS's bundle also carries retired CAs: only all of them expired is an error

    @property
    def stand_in(self) -> bool:
        return any(STAND_IN_MARK in subject for subject in self.subjects)


def bundle_path(environ: dict[str, str] | None = None) -> Path:
    environ = os.environ if environ is None else environ
    override = (environ.get(BUNDLE_VARIABLE) or "").strip()
    return Path(override).resolve() if override else DEFAULT_BUNDLE


def pin_path(bundle: Path) -> Path:
    return bundle.with_name(bundle.name + ".sha256")


def pinned_sha256(bundle: Path) -> str:
    """The SHA-256 pinned next to `bundle` (`sha256sum` format too), "" when there is no pin."""
    pin = pin_path(bundle)
    return next(iter(pin.read_text(encoding="ascii").split()), "").lower() if pin.is_file() else ""


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def describe(data: bytes, source: str) -> tuple[tuple[str, ...], datetime]:
    """The certificates' common names and the latest expiry; CaBundleError unless every one is a CA."""
    try:
        context = ssl.create_default_context(cadata=data.decode("ascii"))
    except (UnicodeDecodeError, ssl.SSLError, ValueError) as exc:
        raise CaBundleError(f"{source} is not a PEM bundle of certificates: {exc}") from None
    certificates = context.get_ca_certs()
    if not certificates:
        raise CaBundleError(f"{source} holds no CA certificate")
    count = data.count(b"-----BEGIN CERTIFICATE-----")
    if len(certificates) != count:
        raise CaBundleError(f"{source}: {count - len(certificates)} of its {count} certificates are not CA "
                            "certificates (a server certificate in a trust bundle is a mistake)")
    subjects = tuple(_common_name(cert) for cert in certificates)
    expiry = max(datetime.fromtimestamp(ssl.cert_time_to_seconds(cert["notAfter"]), timezone.utc)
                 for cert in certificates)
    return subjects, expiry


def _common_name(cert: dict) -> str:
    for rdn in cert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return value
    return "?"


def load(path: Path | None = None, *, now: datetime | None = None) -> CaBundle:
    """The bundle at `path` (default: bundle_path()), checked against its pin; CaBundleError says what to do."""
    path = path or bundle_path()
    pin_file = pin_path(path)
    fetch = "run `make rds-ca` to download AWS's RDS CA bundle and pin it (README, \"Database access\")"
    if not path.is_file():
        raise CaBundleError(f"the RDS CA bundle {path} is missing: the functions verify the database's "
                            f"certificate with it. {fetch[0].upper()}{fetch[1:]}")
    if not pin_file.is_file():
        raise CaBundleError(f"{pin_file} is missing: the bundle's SHA-256 pin is committed next to it; {fetch}")
    data = path.read_bytes()
    pinned = pinned_sha256(path)
    actual = sha256_of(data)
    if actual != pinned:
        raise CaBundleError(f"{path} does not match its pin {pin_file}: SHA-256 {actual}, pinned {pinned or '(empty)'}."
                            " Someone changed the bundle: review where it came from, then re-run `make rds-ca`")
    subjects, expiry = describe(data, str(path))
    if expiry <= (now or datetime.now(timezone.utc)):
        raise CaBundleError(f"{path}: every certificate in it has expired (the last on {expiry:%Y-%m-%d}); run "
                            "`make rds-ca` for AWS's current bundle")
    return CaBundle(path, actual, subjects, expiry)
