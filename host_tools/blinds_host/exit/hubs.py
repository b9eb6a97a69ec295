"""Hub identities: the hubs file, the exit's TLS context, and hub key generation.

The hubs file is JSON::

    {"hubs": [{"name": "home-1", "cert_sha256": "<hex>", "cert": "<base64 DER>"}]}

``cert_sha256`` is the SHA-256 of the hub's DER certificate (what ``blinds tunnel
keygen`` prints). Hub certificates are self-signed, and Python's ssl module has
no verification callback, so the exit needs the certificate itself to refuse
an unknown hub inside the TLS handshake: each hub's certificate is loaded as a
trust anchor (a self-signed certificate is its own CA), and OpenSSL then fails
the handshake of any client whose certificate is not one of them. The
certificate comes inline (``cert``, base64 DER, as keygen prints it) or from a
file (``cert_file``, PEM or DER, relative to the hubs file); it must hash to
``cert_sha256``.
"""

import base64
import binascii
import hashlib
import json
import os
import re
import ssl
import subprocess
import tempfile

from ..errors import EnvironmentProblem, UsageError

MAX_HUBS = 100000
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")


def fingerprint(der):
    """Hex SHA-256 of a DER certificate."""
    return hashlib.sha256(der).hexdigest()


def cert_der(data):
    """DER bytes of a certificate given as PEM or DER bytes."""
    if b"-----BEGIN CERTIFICATE-----" in data:
        return ssl.PEM_cert_to_DER_cert(data.decode("ascii"))
    return bytes(data)


class Hub:
    """One hub the exit knows: its name, fingerprint and DER certificate."""

    __slots__ = ("name", "sha256", "der")

    def __init__(self, name, sha256, der):
        self.name, self.sha256, self.der = name, sha256, der


def parse_hubs(text, base_dir="."):
    """[Hub] from the hubs file's text; UsageError naming the first problem."""
    try:
        doc = json.loads(text)
    except ValueError as e:
        raise UsageError("hubs file is not JSON: %s" % e)
    if not isinstance(doc, dict) or not isinstance(doc.get("hubs"), list):
        raise UsageError('hubs file: expected {"hubs": [...]}')
    if len(doc["hubs"]) > MAX_HUBS:
        raise UsageError("hubs file: more than %d hubs" % MAX_HUBS)
    hubs, names, prints = [], set(), set()
    for i, h in enumerate(doc["hubs"]):
        where = "hubs[%d]" % i
        if not isinstance(h, dict):
            raise UsageError("%s: not an object" % where)
        name, sha = h.get("name"), str(h.get("cert_sha256", "")).lower()
        if not isinstance(name, str) or not _NAME.match(name):
            raise UsageError("%s: name must be 1-63 letters, digits, '.', '_' or '-'" % where)
        if not _HEX64.match(sha):
            raise UsageError("%s (%s): cert_sha256 must be 64 hex digits" % (where, name))
        der = _load_cert(h, base_dir, where, name)
        if fingerprint(der) != sha:
            raise UsageError("%s (%s): the certificate's SHA-256 is %s, not cert_sha256"
                             % (where, name, fingerprint(der)))
        if name in names or sha in prints:
            raise UsageError("%s (%s): duplicate name or certificate" % (where, name))
        names.add(name)
        prints.add(sha)
        hubs.append(Hub(name, sha, der))
    return hubs


def _load_cert(h, base_dir, where, name):
    if "cert" in h:
        try:
            return base64.b64decode(h["cert"], validate=True)
        except (binascii.Error, TypeError, ValueError):
            raise UsageError("%s (%s): cert is not base64" % (where, name))
    if "cert_file" in h:
        path = os.path.join(base_dir, str(h["cert_file"]))
        try:
            with open(path, "rb") as f:
                return cert_der(f.read())
        except (OSError, ValueError) as e:
            raise UsageError("%s (%s): cannot read %s: %s" % (where, name, path, e))
    raise UsageError("%s (%s): give the certificate as cert (base64 DER) or cert_file"
                     % (where, name))


# TLS 1.2 suites, the exit's preference first (docs/tunnel.md, "Throughput"):
# MicroPython's mbedTLS speaks only TLS 1.2 and offers AES-GCM (no
# ChaCha20-Poly1305), in software on the unix port and with the AES
# accelerator on an ESP32; AES-128 takes 10 rounds a block to AES-256's 14
# either way, so it is preferred. OpenSSL's own default picks AES-256.
# (TLS 1.3 suites cannot be chosen from CPython; a hub on mbedTLS never gets there.)
TLS12_CIPHERS = "ECDHE+AESGCM+AES128:ECDHE+CHACHA20:ECDHE+AESGCM"


def server_context(cert_file, key_file, hubs, sni_callback=None):
    """A TLS server context that demands a client certificate and trusts
    exactly the given hubs' certificates."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(TLS12_CIPHERS)
    ctx.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    try:
        ctx.load_cert_chain(cert_file, key_file)
    except (OSError, ssl.SSLError) as e:
        raise UsageError("cannot load the exit's certificate/key (%s, %s): %s"
                         % (cert_file, key_file, e))
    ctx.verify_mode = ssl.CERT_REQUIRED
    for h in hubs:
        try:
            ctx.load_verify_locations(cadata=h.der)
        except ssl.SSLError as e:
            raise UsageError("hub %s: unusable certificate: %s" % (h.name, e))
    ctx.num_tickets = 0  # no NewSessionTicket records: every record after the handshake is a cell
    ctx.sni_callback = sni_callback
    return ctx


class HubsFile:
    """The hubs file, re-read when it changes (:meth:`maybe_reload`).

    ``context`` is the TLS context for new connections and ``names`` maps a
    certificate fingerprint to a hub name. Connections switch to the newest
    context in the handshake's SNI callback, so a hub removed from the file is
    refused in the handshake from then on, without restarting the listener.
    """

    def __init__(self, path, cert_file, key_file):
        self.path, self.cert_file, self.key_file = path, cert_file, key_file
        self.mtime = None
        self.names = {}
        self.context = None
        self.reloads = 0
        self.reload_errors = 0
        self.load()

    def load(self):
        try:
            st = os.stat(self.path)
            with open(self.path, "rb") as f:
                text = f.read()
        except OSError as e:
            raise UsageError("cannot read the hubs file %s: %s" % (self.path, e.strerror or e))
        hubs = parse_hubs(text, os.path.dirname(os.path.abspath(self.path)))
        self.context = server_context(self.cert_file, self.key_file, hubs, self._switch)
        self.names = {h.sha256: h.name for h in hubs}
        self.mtime = (st.st_mtime_ns, st.st_size)

    def maybe_reload(self):
        """Re-read the file if it changed; keep the old one if the new one is
        bad. Returns True when a new hubs list took effect."""
        try:
            st = os.stat(self.path)
        except OSError:
            return False
        if (st.st_mtime_ns, st.st_size) == self.mtime:
            return False
        try:
            self.load()
        except UsageError:
            self.reload_errors += 1
            self.mtime = (st.st_mtime_ns, st.st_size)
            raise
        self.reloads += 1
        return True

    def _switch(self, sslobj, _server_name, _ctx):
        if sslobj.context is not self.context:
            sslobj.context = self.context

    def name_of(self, der):
        """The hub name for a peer certificate (DER), or None."""
        return self.names.get(fingerprint(der)) if der else None


def _openssl(*args, cwd):
    try:
        subprocess.run(["openssl"] + list(args), cwd=cwd, check=True, capture_output=True)
    except FileNotFoundError:
        raise EnvironmentProblem("openssl is not installed (apt-get install openssl)")
    except subprocess.CalledProcessError as e:
        raise EnvironmentProblem("openssl %s failed: %s"
                                 % (args[0], e.stderr.decode(errors="replace")))


def keygen(name, out_dir, days=3650):
    """Write ``out_dir/hub.pem`` and ``out_dir/hub.key`` (EC P-256, self-signed)
    and return the hubs-file entry for it (a dict)."""
    if not _NAME.match(name):
        raise UsageError("--name must be 1-63 letters, digits, '.', '_' or '-'")
    os.makedirs(out_dir, exist_ok=True)
    pem, key = os.path.join(out_dir, "hub.pem"), os.path.join(out_dir, "hub.key")
    for p in (pem, key):
        if os.path.exists(p):
            raise UsageError("%s exists: refusing to overwrite a hub's key" % p)
    with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
        _openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "k.pem", cwd=tmp)
        _openssl("req", "-x509", "-new", "-key", "k.pem", "-sha256", "-days", str(days),
                 "-subj", "/CN=" + name, "-addext", "basicConstraints=critical,CA:FALSE",
                 "-addext", "keyUsage=critical,digitalSignature",
                 "-addext", "extendedKeyUsage=clientAuth", "-out", "c.pem", cwd=tmp)
        # Key first: a half-written pair never looks complete.
        os.chmod(os.path.join(tmp, "k.pem"), 0o600)
        os.replace(os.path.join(tmp, "k.pem"), key)
        os.replace(os.path.join(tmp, "c.pem"), pem)
    with open(pem, "rb") as f:
        der = cert_der(f.read())
    return {"name": name, "cert_sha256": fingerprint(der),
            "cert": base64.b64encode(der).decode("ascii")}
