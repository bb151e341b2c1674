"""A private CA and a serving certificate for the webhook Service, made with `cryptography`."""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# The API server accepts ECDSA P-256, and it is much cheaper to sign and handshake than RSA.
_CURVE = ec.SECP256R1()


@dataclass(frozen=True, slots=True)
class CertBundle:
    """PEM text: `ca_cert` goes into the webhook's caBundle, the others into the Secret."""

    ca_cert: bytes
    cert: bytes
    key: bytes


def service_dns_names(service: str, namespace: str) -> list[str]:
    """The names the API server may use to call a Service (it uses `<svc>.<ns>.svc`)."""
    return [
        service,
        f"{service}.{namespace}",
        f"{service}.{namespace}.svc",
        f"{service}.{namespace}.svc.cluster.local",
    ]


def _name(common_name: str) -> x509.Name:
    return x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "pilotfish"),
        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
    ])


def make_bundle(
    dns_names: list[str],
    ip_addresses: list[str] | None = None,
    *,
    days: int = 365,
    now: datetime.datetime | None = None,
) -> CertBundle:
    """A fresh CA (kept only in memory: re-issuing means a new CA and a new caBundle) and a
    serving certificate for `dns_names` (the first is the subject's common name)."""
    if not dns_names:
        raise ValueError("at least one DNS name is needed")
    start = (now or datetime.datetime.now(datetime.UTC)) - datetime.timedelta(minutes=5)
    end = start + datetime.timedelta(days=days)
    ca_key = ec.generate_private_key(_CURVE)
    ca_name = _name("pilotfish-injector-ca")
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(_CURVE)
    alt_names: list[x509.GeneralName] = [x509.DNSName(name) for name in dns_names]
    alt_names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ip_addresses or []]
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(dns_names[0]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return CertBundle(
        ca_cert=ca_cert.public_bytes(serialization.Encoding.PEM),
        cert=cert.public_bytes(serialization.Encoding.PEM),
        key=key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )


def write_bundle(bundle: CertBundle, out_dir: str | Path) -> dict[str, Path]:
    """Writes ca.crt, tls.crt and tls.key (0600), the key names of a `kubernetes.io/tls`
    Secret plus ca.crt, so `kubectl create secret generic --from-file=DIR` just works."""
    directory = Path(out_dir)
    directory.mkdir(parents=True, exist_ok=True)
    paths = {"ca.crt": directory / "ca.crt", "tls.crt": directory / "tls.crt",
             "tls.key": directory / "tls.key"}
    paths["ca.crt"].write_bytes(bundle.ca_cert)
    paths["tls.crt"].write_bytes(bundle.cert)
    # Written to a new 0600 file, then renamed: the key is never readable by others, and a
    # watching injector never sees half a file.
    temporary = directory / ".tls.key.tmp"
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(bundle.key)
    os.replace(temporary, paths["tls.key"])
    return paths
