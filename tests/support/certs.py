"""A throwaway PKI for the test control plane: one CA, serving and client certificates, the SA key.

ECDSA P-256 everywhere: Kubernetes accepts it for TLS and for service-account tokens (ES256), and key
generation takes microseconds instead of the ~100 ms an RSA key costs per component.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_VALIDITY = dt.timedelta(days=2)  # a test session never lives longer; expired leftovers are useless


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _name(common_name: str, organizations: tuple[str, ...] = ()) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, org) for org in organizations]
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attrs)


@dataclass(frozen=True)
class CertPair:
    """PEM files of one certificate and its key."""

    cert: Path
    key: Path


class TestPKI:
    """Creates PEM files in `directory`: ca.crt/ca.key, then one pair per `issue_*` call."""

    __test__ = False  # not a pytest test class despite the name

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self._ca_key = _new_key()
        now = dt.datetime.now(dt.UTC)
        name = _name("relora-test-ca")
        self._ca_cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self._ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + _VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=True,
                    crl_sign=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self._ca_key.public_key()), critical=False)
            .sign(self._ca_key, hashes.SHA256())
        )
        self.ca = self._write("ca", self._ca_cert, self._ca_key)

    def _write(self, stem: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> CertPair:
        pair = CertPair(self.directory / f"{stem}.crt", self.directory / f"{stem}.key")
        pair.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        pair.key.write_bytes(_key_pem(key))
        pair.key.chmod(0o600)
        return pair

    def _issue(
        self,
        stem: str,
        subject: x509.Name,
        usage: list[x509.ObjectIdentifier],
        sans: list[x509.GeneralName] | None = None,
    ) -> CertPair:
        key = _new_key()
        now = dt.datetime.now(dt.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self._ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + _VALIDITY)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usage), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._ca_key.public_key()), critical=False
            )
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        return self._write(stem, builder.sign(self._ca_key, hashes.SHA256()), key)

    def issue_server(self, stem: str, dns_names: list[str], ips: list[str]) -> CertPair:
        sans: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
        sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
        return self._issue(stem, _name(dns_names[0]), [ExtendedKeyUsageOID.SERVER_AUTH], sans)

    def issue_client(self, stem: str, user: str, groups: tuple[str, ...] = ()) -> CertPair:
        """A client certificate: Kubernetes reads the user from CN and the groups from O."""
        return self._issue(stem, _name(user, groups), [ExtendedKeyUsageOID.CLIENT_AUTH])

    def service_account_keys(self) -> CertPair:
        """The token signing key pair (`cert` holds the public key PEM, not a certificate)."""
        key = _new_key()
        pair = CertPair(self.directory / "sa.pub", self.directory / "sa.key")
        pair.cert.write_bytes(
            key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        )
        pair.key.write_bytes(_key_pem(key))
        pair.key.chmod(0o600)
        return pair
