"""Signing certificates for C2PA: a studio's own (configured), or a local chain made on first use.

C2PA validators accept a signing certificate only with CA:false, keyUsage digitalSignature (critical) and an
extended key usage they know (emailProtection here; serverAuth is refused). The local chain is a small CA
plus one signing certificate, both kept in the server's state folder: takes verify as *trusted* against that
CA (``provenance verify`` uses it by default), and as *valid but untrusted* anywhere else. A studio that
publishes outside the building configures a certificate from its own PKI instead.
"""
from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path

from bodydouble import atomic

CA_FILE, CHAIN_FILE, KEY_FILE = "ca.pem", "signer-chain.pem", "signer-key.pem"


@dataclass(frozen=True)
class SigningFiles:
    chain: Path            # signing certificate first, then its issuers (PEM)
    key: Path              # its private key (PEM, PKCS#8)
    anchors: Path | None   # the trust anchor(s) verification uses by default (PEM)


def make_chain(folder: Path, organisation: str = "BodyDouble local signing", days: int = 3650,
               signer_usage_ok: bool = True) -> SigningFiles:
    """A CA and a C2PA signing certificate (EC P-256) under ``folder``; the key file is private to the owner.

    ``signer_usage_ok=False`` makes a signing certificate without the digitalSignature usage (tests of refusal).
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=5)

    def name(common: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common),
                          x509.NameAttribute(NameOID.ORGANIZATION_NAME, organisation)])

    def usage(**on) -> x509.KeyUsage:
        flags = dict.fromkeys(("digital_signature", "content_commitment", "key_encipherment", "data_encipherment",
                               "key_agreement", "key_cert_sign", "crl_sign", "encipher_only", "decipher_only"), False)
        return x509.KeyUsage(**{**flags, **on})

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(name(f"{organisation} CA")).issuer_name(name(f"{organisation} CA"))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now).not_valid_after(now + dt.timedelta(days=days))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(usage(key_cert_sign=True, crl_sign=True), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    signer = (x509.CertificateBuilder().subject_name(name("BodyDouble take signer")).issuer_name(ca.subject)
              .public_key(key.public_key()).serial_number(x509.random_serial_number())
              .not_valid_before(now).not_valid_after(now + dt.timedelta(days=days))
              .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
              .add_extension(usage(digital_signature=signer_usage_ok, key_encipherment=not signer_usage_ok),
                             critical=True)
              .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
              .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
              .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
              .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    files = SigningFiles(chain=folder / CHAIN_FILE, key=folder / KEY_FILE, anchors=folder / CA_FILE)
    _write(files.anchors, ca.public_bytes(pem))
    _write(files.chain, signer.public_bytes(pem) + ca.public_bytes(pem))
    _write(files.key, key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
           private=True)
    return files


def local_signing_files(folder: Path) -> SigningFiles:
    """The local chain in ``folder``, made the first time it is needed."""
    folder = Path(folder)
    files = SigningFiles(chain=folder / CHAIN_FILE, key=folder / KEY_FILE, anchors=folder / CA_FILE)
    if not (files.chain.is_file() and files.key.is_file()):
        return make_chain(folder)
    return files


def _write(path: Path, data: bytes, private: bool = False) -> None:
    """Atomically; a private key is never readable by others, not even as its temporary."""
    with atomic.atomic_path(path) as tmp:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600 if private else 0o644)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
