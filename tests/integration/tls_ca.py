"""A throwaway test CA made with the ``openssl`` CLI: the CA the clients trust, a server
certificate it signed (CN ``localhost``, SAN ``DNS:localhost`` and ``IP:127.0.0.1``), and a
second, unrelated CA (the "wrong CA" a client may be given by mistake)."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from cdc_sync.testing.pgserver import ServerTls

SERVER_NAMES = ("DNS:localhost", "IP:127.0.0.1")
# A loopback address the certificate does not name (the TLS test servers listen there too).
UNNAMED_HOST = "127.0.0.2"
_DAYS = "2"

_REQ_CONFIG = """[req]
distinguished_name = dn
[dn]
[v3_ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
"""
_SERVER_EXT = """basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid, issuer
subjectAltName = {names}
"""


@dataclass(frozen=True)
class TestCa:
    ca: Path  # the CA certificate the clients are given (PEM)
    wrong_ca: Path  # an unrelated CA's certificate: the server's chain does not lead to it
    cert: Path  # the server certificate, signed by ``ca``
    key: Path  # its private key (PEM, unencrypted)

    __test__ = False  # not a pytest test class

    @property
    def server(self) -> ServerTls:
        """What a test server needs to serve TLS with this CA's certificate."""
        return ServerTls(cert=self.cert, key=self.key, ca=self.ca)


def _openssl(*args: str, cwd: Path) -> None:
    exe = shutil.which("openssl")
    if exe is None:
        raise RuntimeError("the openssl CLI is missing (install openssl)")
    res = subprocess.run(
        [exe, *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )
    if res.returncode != 0:
        raise RuntimeError(f"openssl {args[0]} failed: {res.stderr.strip()}")


def _self_signed(directory: Path, stem: str, subject: str) -> tuple[Path, Path]:
    config = directory / "req.cnf"
    key, cert = directory / f"{stem}.key", directory / f"{stem}.pem"
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha256", "-days", _DAYS,
        "-subj", subject, "-keyout", str(key), "-out", str(cert),
        "-config", str(config), "-extensions", "v3_ca",
        cwd=directory,
    )  # fmt: skip
    return cert, key


def make_test_ca(directory: Path) -> TestCa:
    """Write the CAs and the server certificate into ``directory`` (created if missing)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "req.cnf").write_text(_REQ_CONFIG)  # no dependence on the system openssl.cnf
    ca, ca_key = _self_signed(directory, "ca", "/O=cdc-sync tests/CN=cdc-sync test CA")
    wrong_ca, _ = _self_signed(directory, "wrong-ca", "/O=elsewhere/CN=unrelated CA")
    key, csr, cert = directory / "server.key", directory / "server.csr", directory / "server.pem"
    ext = directory / "server.ext"
    ext.write_text(_SERVER_EXT.format(names=", ".join(SERVER_NAMES)))
    _openssl(
        "req", "-new", "-newkey", "rsa:2048", "-nodes", "-sha256",
        "-subj", "/O=cdc-sync tests/CN=localhost", "-keyout", str(key), "-out", str(csr),
        "-config", str(directory / "req.cnf"),
        cwd=directory,
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
        "-CAcreateserial",
        "-days", _DAYS, "-sha256", "-extfile", str(ext), "-out", str(cert),
        cwd=directory,
    )  # fmt: skip
    return TestCa(ca=ca, wrong_ca=wrong_ca, cert=cert, key=key)
