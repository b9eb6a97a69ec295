# The control page's admin access: signed session cookies, CSRF tokens and
# login rate limiting. The password itself is PBKDF2 (blinds.local.auth).
#
# The signing key is random per boot: a reboot logs everyone out, and no
# secret needs to be stored. A session cookie is "<id>.<HMAC(key, id)>" and
# its id must also be in the (bounded) table of live sessions: a forged or
# stale cookie is refused, a logout really ends the session. A form's CSRF
# token is HMAC(key, "csrf:" + id); the login form, before any session, is
# protected by a signed nonce cookie and its own token (double submit).
import hashlib
import os
from binascii import hexlify

from blinds.compat import const
from blinds.local.auth import same

_BLOCK = const(64)
_ID_BYTES = const(16)
_ID_HEX = const(32)
_SIG_HEX = const(64)
SESSION = "blinds_sid"
PRELOGIN = "blinds_pre"
_GLOBAL_FACTOR = const(4)  # failures from all devices together: this many times one's
_MAX_CLIENTS = const(8)  # devices tracked for rate limiting (oldest window dropped)


def hmac_sha256(key, msg):
    """HMAC-SHA256 (RFC 2104) of bytes msg under a key of at most 64 bytes."""
    k = key + bytes(_BLOCK - len(key))
    h = hashlib.sha256(bytes(b ^ 0x36 for b in k))
    h.update(msg)
    o = hashlib.sha256(bytes(b ^ 0x5C for b in k))
    o.update(h.digest())
    return o.digest()


def _hexok(s, n):
    if not isinstance(s, str) or len(s) != n:
        return False
    for c in s:
        if not ("0" <= c <= "9" or "a" <= c <= "f"):
            return False
    return True


class Sessions:
    """Live admin sessions, at most max_sessions (the oldest login goes)."""

    def __init__(self, max_sessions, session_s, key=None):
        self.key = key or os.urandom(32)
        self.max = max_sessions
        self.ttl = session_s
        self.live = {}  # id -> (expiry, login number)
        self.seq = 0
        self.c = {"logins": 0, "evicted": 0, "bad_cookie": 0, "bad_csrf": 0}

    def _sig(self, what):
        return hexlify(hmac_sha256(self.key, what.encode())).decode()

    def new(self, now_s):
        """Open a session -> its cookie value. The oldest goes when full."""
        self._expire(now_s)
        if len(self.live) >= self.max:
            old = None
            for k, e in self.live.items():
                if old is None or e[1] < self.live[old][1]:
                    old = k
            del self.live[old]
            self.c["evicted"] += 1
        sid = hexlify(os.urandom(_ID_BYTES)).decode()
        self.seq += 1  # logins in order (dict order is not insertion order on MicroPython)
        self.live[sid] = (now_s + self.ttl, self.seq)
        self.c["logins"] += 1
        return sid + "." + self._sig(sid)

    def _expire(self, now_s):
        for k in [k for k, e in self.live.items() if e[0] <= now_s]:
            del self.live[k]

    def check(self, cookie, now_s):
        """The session id of a valid, live session cookie value, else None."""
        if cookie is None:
            return None
        sid, dot, sig = cookie.partition(".")
        if not dot or not _hexok(sid, _ID_HEX) or not _hexok(sig, _SIG_HEX) or \
                not same(sig.encode(), self._sig(sid).encode()):
            self.c["bad_cookie"] += 1
            return None
        e = self.live.get(sid)
        if e is None or e[0] <= now_s:
            self.c["bad_cookie"] += 1
            return None
        return sid

    def end(self, sid):
        self.live.pop(sid, None)

    def csrf(self, sid):
        """The CSRF token of a session's forms."""
        return self._sig("csrf:" + sid)

    def csrf_ok(self, sid, token):
        ok = _hexok(token, _SIG_HEX) and same(token.encode(), self.csrf(sid).encode())
        if not ok:
            self.c["bad_csrf"] += 1
        return ok

    # -- the login form, before any session ----------------------------------------
    def prelogin(self):
        """-> (cookie value, form token) for a login form."""
        nonce = hexlify(os.urandom(_ID_BYTES)).decode()
        return nonce + "." + self._sig("pre:" + nonce), self._sig("login:" + nonce)

    def prelogin_ok(self, cookie, token):
        if cookie is None or token is None:
            self.c["bad_csrf"] += 1
            return False
        nonce, dot, sig = cookie.partition(".")
        ok = dot and _hexok(nonce, _ID_HEX) and _hexok(sig, _SIG_HEX) and \
            _hexok(token, _SIG_HEX) and same(sig.encode(), self._sig("pre:" + nonce).encode()) \
            and same(token.encode(), self._sig("login:" + nonce).encode())
        if not ok:
            self.c["bad_csrf"] += 1
        return bool(ok)


class RateLimit:
    """Failed logins per device in a window of window_s: at most `attempts`
    per device, and _GLOBAL_FACTOR times that from all devices together."""

    def __init__(self, attempts, window_s):
        self.attempts = attempts
        self.window = window_s
        self.per = {}  # device key -> [window start, failures]
        self.all = [0, 0]
        self.limited = 0

    def _cur(self, e, now_s):
        if now_s - e[0] >= self.window:
            e[0] = now_s
            e[1] = 0
        return e

    def retry_after(self, key, now_s):
        """Seconds until key may try again (0: it may now)."""
        g = self._cur(self.all, now_s)
        e = self.per.get(key)
        wait = 0
        if e is not None and self._cur(e, now_s)[1] >= self.attempts:
            wait = e[0] + self.window - now_s
        if g[1] >= self.attempts * _GLOBAL_FACTOR:
            wait = max(wait, g[0] + self.window - now_s)
        if wait:
            self.limited += 1
        return max(0, wait)

    def failed(self, key, now_s):
        e = self.per.get(key)
        if e is None:
            if len(self.per) >= _MAX_CLIENTS:
                old = None
                for k, v in self.per.items():
                    if old is None or v[0] < self.per[old][0]:
                        old = k
                del self.per[old]
            e = self.per[key] = [now_s, 0]
        self._cur(e, now_s)[1] += 1
        self._cur(self.all, now_s)[1] += 1

    def succeeded(self, key):
        self.per.pop(key, None)
