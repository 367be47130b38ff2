"""Certificates for the tests' PostgreSQL TLS: certificate authorities and the server certificates they issue.

EC P-256 keys (generated in milliseconds, unlike RSA), SHA-256 signatures, and the extensions a verifying client
with Python 3.13's default `VERIFY_X509_STRICT` insists on: a CA with critical basicConstraints, keyUsage and a
subject key identifier; a server certificate with subjectAltName, serverAuth and an authority key identifier.

The committed stand-in for the Amazon RDS CA bundle (tests/fixtures/tls/, see its README) is a CA from `new_ca`;
`load_ca` reads it (or any other CA given as a certificate and key PEM file) back.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["CertificateAuthority", "ServerCertificate", "new_ca", "load_ca", "issue_server_cert",
           "STANDIN_CA_CERT", "STANDIN_CA_KEY", "STANDIN_CA_NAME",
           "STANDIN_CA_UNIT"]

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "tls"
STANDIN_CA_CERT = FIXTURES / "standin-rds-ca.pem"
STANDIN_CA_KEY = FIXTURES / "standin-rds-ca.key"
# A common name has at most 64 characters: the rest of the description is the organizational unit.
STANDIN_CA_NAME = "stepfuncproject stand-in RDS CA (tests only, trusted nowhere)"
STANDIN_CA_UNIT = "stand-in for the Amazon RDS CA bundle, not trusted anywhere"
UTC = timezone.utc


@dataclass(frozen=True)
class KeyPair:
    """A certificate and its private key, as PEM on demand."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        return _key_pem(self.key)


@dataclass(frozen=True)
class CertificateAuthority(KeyPair):
    @property
    def common_name(self) -> str:
        return self.cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value  # type: ignore[return-value]


@dataclass(frozen=True)
class ServerCertificate(KeyPair):
    def write(self, cert_path: Path | str, key_path: Path | str) -> None:
        """The certificate (world-readable) and its key (mode 0600, created so: never readable by others)."""
        Path(cert_path).write_bytes(self.cert_pem)
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(self.key_pem)
        os.chmod(key_path, 0o600)  # also when the file existed before


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _serial() -> int:
    return x509.random_serial_number()


def new_ca(common_name: str = "throwaway PostgreSQL test CA", *, unit: str | None = None,
           not_before: datetime | None = None, not_after: datetime | None = None) -> CertificateAuthority:
    """A self-signed CA (default validity: from an hour ago for 30 days); `unit`: an organizational unit."""
    now = datetime.now(UTC)
    not_before = not_before or now - timedelta(hours=1)
    not_after = not_after or now + timedelta(days=30)
    key = ec.generate_private_key(ec.SECP256R1())
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if unit:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, unit))
    name = x509.Name(attributes)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key()).serial_number(_serial())
        .not_valid_before(not_before).not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                     crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
        .sign(key, hashes.SHA256())
    )
    return CertificateAuthority(cert, key)


def load_ca(cert_path: Path | str, key_path: Path | str) -> CertificateAuthority:
    """A CA from its certificate and (unencrypted) private key PEM files; ValueError unless they belong together."""
    cert = x509.load_pem_x509_certificate(Path(cert_path).read_bytes())
    key = serialization.load_pem_private_key(Path(key_path).read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{key_path}: not an EC private key")
    if key.public_key().public_numbers() != cert.public_key().public_numbers():  # type: ignore[union-attr]
        raise ValueError(f"{key_path} is not the key of the certificate {cert_path}")
    return CertificateAuthority(cert, key)


def issue_server_cert(ca: CertificateAuthority, *, dns_names: tuple[str, ...] = (),
                      ip_addresses: tuple[str, ...] = ("127.0.0.1",), not_before: datetime | None = None,
                      not_after: datetime | None = None) -> ServerCertificate:
    """A TLS server certificate for these names, issued by `ca` (default validity: from an hour ago for 30 days,
    within the CA's own validity)."""
    now = datetime.now(UTC)
    not_before = not_before or max(now - timedelta(hours=1), ca.cert.not_valid_before_utc)
    not_after = not_after or min(now + timedelta(days=30), ca.cert.not_valid_after_utc)
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = [x509.DNSName(name) for name in dns_names]
    names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ip_addresses]
    if not names:
        raise ValueError("a server certificate needs at least one DNS name or IP address")
    common_name = dns_names[0] if dns_names else ip_addresses[0]
    ca_ski = ca.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca.cert.subject).public_key(key.public_key()).serial_number(_serial())
        .not_valid_before(not_before).not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                     crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
        .sign(ca.key, hashes.SHA256())
    )
    return ServerCertificate(cert, key)
