"""A throw-away certificate authority for the test home, made with the openssl CLI.

Keys are EC P-256: small and fast, and what mbedTLS on the ESP32 handles best.
"""

import os
import subprocess


def _openssl(*args, cwd):
    subprocess.run(["openssl"] + list(args), cwd=cwd, check=True, capture_output=True)


def make_ca(directory, name="ca", cn="Blinds Test CA"):
    """Create ``name.key`` and ``name.pem`` (a self-signed CA) in ``directory``."""
    key, pem = name + ".key", name + ".pem"
    _openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", key, cwd=directory)
    _openssl(
        "req", "-x509", "-new", "-key", key, "-sha256", "-days", "30", "-subj", "/CN=" + cn,
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        "-out", pem, cwd=directory,
    )
    return os.path.join(directory, pem)


def make_server_cert(directory, name, dns_names, ips=(), ca="ca"):
    """Create ``name.key`` and ``name.pem`` (leaf, then the CA) signed by ``ca``."""
    key, csr, crt, pem = name + ".key", name + ".csr", name + ".crt", name + ".pem"
    san = ",".join(["DNS:" + d for d in dns_names] + ["IP:" + i for i in ips])
    ext = name + ".ext"
    with open(os.path.join(directory, ext), "w") as f:
        f.write("subjectAltName=%s\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n" % san)
    _openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", key, cwd=directory)
    _openssl("req", "-new", "-key", key, "-subj", "/CN=" + dns_names[0], "-out", csr, cwd=directory)
    _openssl(
        "x509", "-req", "-in", csr, "-CA", ca + ".pem", "-CAkey", ca + ".key",
        "-CAcreateserial", "-days", "30", "-sha256", "-extfile", ext, "-out", crt, cwd=directory,
    )
    with open(os.path.join(directory, pem), "w") as out:
        for part in (crt, ca + ".pem"):
            with open(os.path.join(directory, part)) as f:
                out.write(f.read())
    return os.path.join(directory, pem), os.path.join(directory, key)
