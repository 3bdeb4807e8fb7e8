"""A self-signed TLS certificate for nginx when none is mounted: `python -m microvibe.selfsigned DIR [--host NAME]`.

Writes DIR/tls.crt and DIR/tls.key (RSA-2048, valid one year, the host as CN and subjectAltName;
the key file mode 0600) unless both exist already: a real certificate put there by the operator is
never touched, and restarts keep the same self-signed one (browsers' exceptions stay valid).
docker-compose.yml runs this once (the `certs` service) before nginx starts.
"""
from __future__ import annotations

import argparse
import datetime
import ipaddress
import os
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CERT_NAME, KEY_NAME = "tls.crt", "tls.key"
VALID_DAYS = 365


class HalfPairError(RuntimeError):
    """One of tls.crt / tls.key exists without the other: an operator's pair is incomplete."""


def _subject_alt_name(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def certificate_make(host: str, days: int = VALID_DAYS) -> tuple[bytes, bytes]:
    """(certificate PEM, unencrypted PKCS#8 key PEM) of a new self-signed server certificate."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host[:64])])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))  # a client's clock a little behind still accepts it
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName([_subject_alt_name(host)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def _write(path: Path, data: bytes, mode: int) -> None:
    """Written under a temporary name, then renamed: nginx never reads half a file."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.unlink(missing_ok=True)
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)  # the key is never world-readable
    with os.fdopen(fd, "wb") as file:
        file.write(data)
    os.chmod(temporary, mode)  # os.open's mode is filtered by the umask
    os.replace(temporary, path)


def ensure(directory: Path, host: str) -> bool:
    """Make the pair unless both files exist; True when it made them."""
    cert_path, key_path = directory / CERT_NAME, directory / KEY_NAME
    present = [path.name for path in (cert_path, key_path) if path.exists()]
    if len(present) == 2:
        return False
    if present:
        raise HalfPairError(f"{directory} has {present[0]} but not the other file of the pair: put both there "
                            f"(a mounted certificate) or remove it to get a self-signed one")
    directory.mkdir(parents=True, exist_ok=True)
    cert_pem, key_pem = certificate_make(host)
    _write(key_path, key_pem, 0o600)
    _write(cert_path, cert_pem, 0o644)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m microvibe.selfsigned", description=__doc__.splitlines()[0])
    parser.add_argument("directory", type=Path)
    parser.add_argument("--host", default=os.environ.get("PUBLIC_HOST") or "localhost",
                        help="the certificate's name (default: PUBLIC_HOST, else localhost)")
    args = parser.parse_args(argv)
    try:
        made = ensure(args.directory, args.host)
    except HalfPairError as error:
        print(f"selfsigned: {error}", file=sys.stderr)
        return 1
    if made:
        print(f"selfsigned: made a self-signed certificate for {args.host} in {args.directory} "
              f"(valid {VALID_DAYS} days; mount a real one there to replace it)")
    else:
        print(f"selfsigned: {args.directory} already has {CERT_NAME} and {KEY_NAME}; left as they are")
    return 0


if __name__ == "__main__":
    sys.exit(main())
