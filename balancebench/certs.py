"""A throwaway certificate authority and an echo server certificate, made with the ``openssl`` command.

TLS scenarios need the echo pods to present a certificate the clients trust. Each run makes its own CA
(never installed anywhere, never reused) and one server certificate for :data:`SERVER_NAME`, which the
clients send as SNI and verify, whatever address they dial (a ClusterIP, a pod IP, loopback).

    certs = make_certificates(run_dir / "tls")
    echo_args = ("--tls-cert", str(certs.cert), "--tls-key", str(certs.key))
    # clients: --tls-ca certs.ca (loadtests.protocols.TLS_SERVER_NAME is the name they check)
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from balancebench.errors import MissingFeature
from balancebench.shell import run
from loadtests.protocols import TLS_SERVER_NAME

SERVER_NAME = TLS_SERVER_NAME
"""The DNS name in the server certificate (its only subject alternative name besides loopback)."""

_DAYS = "7"


@dataclass(frozen=True, kw_only=True)
class Certificates:
    """PEM files: the CA clients trust, the server certificate and its key."""

    ca: Path
    cert: Path
    key: Path


def make_certificates(directory: Path) -> Certificates:
    """Make a CA and a server certificate signed by it in ``directory`` (created); EC P-256, 7 days."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise MissingFeature("TLS protocols need the openssl command: install Debian's openssl (make setup)")
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca = directory / "ca.key", directory / "ca.pem"
    key, csr, cert = directory / "server.key", directory / "server.csr", directory / "server.pem"
    extensions = directory / "server.ext"
    extensions.write_text(
        f"subjectAltName=DNS:{SERVER_NAME},IP:127.0.0.1\n"
        "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n"
    )
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    run([openssl, "req", "-x509", *ec, "-keyout", str(ca_key), "-out", str(ca), "-days", _DAYS,
         "-subj", "/CN=balancebench throwaway CA"])  # fmt: skip
    run([openssl, "req", *ec, "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={SERVER_NAME}"])
    run([openssl, "x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
         "-CAcreateserial", "-out", str(cert), "-days", _DAYS, "-extfile", str(extensions)])  # fmt: skip
    for path in (ca_key, key):
        path.chmod(0o600)
    csr.unlink()
    return Certificates(ca=ca, cert=cert, key=key)
