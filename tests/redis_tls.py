"""A private PKI made with `cryptography`, and a redis-server that speaks TLS only, with ACL users.

`session_store.embedded.start_redis` checks readiness over plaintext, so the TLS server is started
here with the same binary and the same safe defaults (127.0.0.1, no persistence), on `--port 0` and a
free `--tls-port`, and stopped by PID.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import redis
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from session_store.embedded import RedisProcess, find_server_binary, free_port

# Markers in the log of a server built without TLS (Redis: "not compiled"; Valkey: "TLS support").
_NO_TLS_MARKERS = ("Failed finding TLS support", "connection type tls", "TLS support not compiled")


class TlsUnsupportedError(RuntimeError):
    """The redis-server binary was built without TLS."""


@dataclass(frozen=True)
class Pki:
    """Files of a test PKI: a CA, a server certificate for 127.0.0.1, a client certificate, and a
    second CA that signed nothing of these (to prove verification)."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _ca(common_name: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = _key()
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _leaf(
    common_name: str,
    ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey],
    *,
    server: bool,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = _key()
    ca_cert, ca_key = ca
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
    )
    if server:
        # An IP SAN only: a URL naming "localhost" fails the host-name check on purpose.
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
    return builder.sign(ca_key, hashes.SHA256()), key


def make_pki(directory: Path) -> Pki:
    """Write a fresh CA, server and client certificates and keys under `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    ca = _ca("session-store test CA")
    other_cert, _ = _ca("some other CA")
    server_cert, server_key = _leaf("redis test server", ca, server=True)
    client_cert, client_key = _leaf("session-store", ca, server=False)
    pki = Pki(
        ca=directory / "ca.pem",
        server_cert=directory / "server.pem",
        server_key=directory / "server-key.pem",
        client_cert=directory / "client.pem",
        client_key=directory / "client-key.pem",
        other_ca=directory / "other-ca.pem",
    )
    pki.ca.write_bytes(ca[0].public_bytes(serialization.Encoding.PEM))
    pki.other_ca.write_bytes(other_cert.public_bytes(serialization.Encoding.PEM))
    pki.server_cert.write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
    _write_key(server_key, pki.server_key)
    pki.client_cert.write_bytes(client_cert.public_bytes(serialization.Encoding.PEM))
    _write_key(client_key, pki.client_key)
    return pki


def start_tls_redis(
    data_dir: Path,
    pki: Pki,
    *,
    acl: tuple[tuple[str, ...], ...] = (),
    extra_args: tuple[str, ...] = (),
    probe_user: tuple[str, str] | None = None,
    wait_seconds: float = 10.0,
) -> RedisProcess:
    """Start redis-server on 127.0.0.1 with TLS only (`--port 0`), client certificates required.

    Args:
        acl: ACL users, each the words of one `user` directive (e.g. `("default", "off")`).
        probe_user: (user, password) to PING with while waiting (needed when `default` is off).

    Raises:
        TlsUnsupportedError: the binary has no TLS (its log says so).
        RuntimeError: the server did not answer in time.
    """
    binary = find_server_binary()
    data_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    args = [
        binary,
        "--port",
        "0",
        "--tls-port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--tls-cert-file",
        str(pki.server_cert),
        "--tls-key-file",
        str(pki.server_key),
        "--tls-ca-cert-file",
        str(pki.ca),
        "--tls-auth-clients",
        "yes",
        "--dir",
        str(data_dir.resolve()),
        "--save",
        "",
        "--appendonly",
        "no",
        "--daemonize",
        "no",
        "--logfile",
        "server.log",
        "--hash-max-listpack-value",
        "1024",
        *(word for user in acl for word in ("--user", *user)),
        *extra_args,
    ]
    process = subprocess.Popen(args, start_new_session=True, stdout=subprocess.DEVNULL)  # noqa: S603 - our own argv
    proc = RedisProcess("tls", port, data_dir, process)
    client = redis.Redis(
        host="127.0.0.1",
        port=port,
        ssl=True,
        ssl_ca_certs=str(pki.ca),
        ssl_certfile=str(pki.client_cert),
        ssl_keyfile=str(pki.client_key),
        username=probe_user[0] if probe_user else None,
        password=probe_user[1] if probe_user else None,
        socket_timeout=1,
        socket_connect_timeout=1,
    )
    deadline = time.monotonic() + wait_seconds
    try:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                log = (data_dir / "server.log").read_text(encoding="utf-8", errors="replace")
                if any(marker in log for marker in _NO_TLS_MARKERS):
                    raise TlsUnsupportedError(f"{binary} was built without TLS")
                raise RuntimeError(f"TLS redis-server exited; see {data_dir / 'server.log'}")
            with contextlib.suppress(redis.RedisError):
                if client.ping():
                    return proc
            time.sleep(0.05)
    finally:
        client.close()
    proc.kill()
    raise RuntimeError(f"TLS redis-server did not answer; see {data_dir / 'server.log'}")
