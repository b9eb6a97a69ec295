# Password hashes for the hub's own services: PBKDF2-HMAC-SHA256 built on
# hashlib.sha256 alone (MicroPython has no hmac module nor pbkdf2_hmac).
#
# Stored form: "pbkdf2-sha256$<iterations>$<salt, base64>$<32-byte hash, base64>",
# written by `blinds config passwd`. Checking runs in slices that yield to the
# event loop, so a login never stalls DNS or the relay.
import asyncio
import hashlib
from binascii import a2b_base64

from blinds.compat import const

PREFIX = "pbkdf2-sha256"
MIN_ITERATIONS = const(1000)
MAX_ITERATIONS = const(100000)  # a config cannot make one login take minutes
DEFAULT_ITERATIONS = const(2000)  # ~0.3 s on an ESP32 at 240 MHz (estimated)
_SLICE = const(100)  # iterations between yields to the event loop
_BLOCK = const(64)


def parse(stored):
    """-> (iterations, salt, hash) or raise ValueError (config validation uses it)."""
    parts = stored.split("$") if isinstance(stored, str) else ()
    if len(parts) != 4 or parts[0] != PREFIX or not parts[1].isdigit():
        raise ValueError("not " + PREFIX + "$iterations$salt$hash")
    n = int(parts[1])
    if not MIN_ITERATIONS <= n <= MAX_ITERATIONS:
        raise ValueError("iterations must be %d..%d" % (MIN_ITERATIONS, MAX_ITERATIONS))
    try:
        salt = a2b_base64(parts[2])
        dk = a2b_base64(parts[3])
    except Exception:  # binascii.Error on CPython, ValueError on MicroPython
        raise ValueError("bad base64")
    if len(salt) < 8 or len(dk) != 32:
        raise ValueError("salt of 8+ bytes and a 32-byte hash needed")
    return n, salt, dk


class Pbkdf2:
    # PBKDF2-HMAC-SHA256, one 32-byte block (RFC 8018), run a slice at a time.
    def __init__(self, password, salt, iterations):
        if len(password) > _BLOCK:
            password = hashlib.sha256(password).digest()
        key = password + bytes(_BLOCK - len(password))
        self.ipad = bytes(b ^ 0x36 for b in key)
        self.opad = bytes(b ^ 0x5C for b in key)
        self.u = self._hmac(salt + b"\x00\x00\x00\x01")
        self.acc = int.from_bytes(self.u, "big")
        self.left = iterations - 1

    def _hmac(self, msg):
        h = hashlib.sha256(self.ipad)
        h.update(msg)
        o = hashlib.sha256(self.opad)
        o.update(h.digest())
        return o.digest()

    def run(self, n):
        # Up to n more iterations; -> True when done.
        n = min(n, self.left)
        u = self.u
        acc = self.acc
        for _ in range(n):
            u = self._hmac(u)
            acc ^= int.from_bytes(u, "big")
        self.u = u
        self.acc = acc
        self.left -= n
        return not self.left

    def digest(self):
        return self.acc.to_bytes(32, "big")


def pbkdf2_sha256(password, salt, iterations):
    p = Pbkdf2(password, salt, iterations)
    p.run(iterations)
    return p.digest()


def same(a, b):
    # Compare in time independent of where they differ.
    if len(a) != len(b):
        return False
    d = 0
    for i in range(len(a)):
        d |= a[i] ^ b[i]
    return not d


class Logins:
    # Who may connect to the local broker, and with which ACL (blinds.local.acl).
    def __init__(self, m):
        from blinds.local.acl import Acl

        self.users = {}
        for u in m["users"]:
            self.users[u["username"]] = (u["password_hash"], Acl(u["publish"], u["subscribe"]))
        an = m["anonymous"]
        self.anon = Acl(an["publish"], an["subscribe"]) if m["allow_anonymous"] else None
        # An unknown user name costs as much to refuse as a known one.
        self.dummy = "%s$%d$%s$%s" % (PREFIX, DEFAULT_ITERATIONS, "A" * 22 + "==", "A" * 43 + "=")
        self.verified = {}  # user -> sha256 of the password last accepted (no PBKDF2 again)
        self.checking = False  # one password check at a time: bounded CPU

    async def login(self, user, pw):
        """-> the client's Acl, or raise MqttError with its CONNACK code."""
        from blinds.local import mqtt_codec as mq

        if user is None:
            if self.anon is None:
                raise mq.MqttError("anonymous", mq.NOT_AUTHORIZED)
            return self.anon
        u = self.users.get(user)
        key = hashlib.sha256(user.encode() + b"\0" + (pw or b"")).digest()
        if u is not None and pw is not None and self.verified.get(user) == key:
            return u[1]
        while self.checking:
            await asyncio.sleep_ms(20)
        self.checking = True
        try:
            ok = await check(u[0] if u else self.dummy, pw or b"")
        finally:
            self.checking = False
        if not ok or u is None or pw is None:
            raise mq.MqttError("bad user name or password", mq.BAD_CREDENTIALS)
        self.verified[user] = key
        return u[1]


async def check(stored, password):
    """Does password (bytes) match the stored hash? Yields between slices."""
    n, salt, dk = parse(stored)
    p = Pbkdf2(password, salt, n)
    while not p.run(_SLICE):
        await asyncio.sleep_ms(0)
    return same(p.digest(), dk)
