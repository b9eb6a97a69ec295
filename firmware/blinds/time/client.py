# SNTP client on the uplink: sets the hub's clock from the servers the owner
# configured ("time" in the config; addresses only, no lookup in the clear).
# Not used with a tunnel: the exit's TIME cells set the clock then, and nothing
# but the tunnel may leave the uplink.
#
# One exchange at a time, on a socket of its own taken from the socket budget
# for that exchange only (a fresh source port per request, as RFC 9109 asks).
# After a good reply it waits poll_s; after a failure it tries the next server,
# waiting twice as long each time (from _RETRY_MIN_MS up to poll_s).
import asyncio
import os
import socket
import struct

from blinds.compat import const, ticks_diff, ticks_ms
from blinds.time import sntp

_MODE_CLIENT = const(3)
_MODE_SERVER = const(4)
_LI_ALARM = const(3)  # the server's clock is not synchronised
_KOD_STRATUM = const(0)
_MAX_STRATUM = const(15)
_MAX_ROOT = const(0x10000)  # 16.16 s: root delay and dispersion under 1 s each
_ERA = const(0x100000000)
_TIMEOUT_MS = const(3000)
_RETRY_MIN_MS = const(2000)
_MAX_DELAY_MS = const(2000)  # a round trip longer than this says little about the time
# Each of the four timestamps is cut to whole ms (the server's two once more
# in the fraction's conversion): a round trip of 0 can come out as -2 ms.
_QUANTUM_MS = const(2)
_DENIED_MS = const(86400000)  # a server that said DENY or RSTR is left alone this long


class KissOfDeath(sntp.SntpError):
    """Stratum 0: the server says go away (code RATE: poll less; DENY, RSTR: never again)."""

    def __init__(self, code):
        super().__init__("kiss-of-death " + code)
        self.code = code


# ---- the codec: request, reply check, offset ---------------------------------


def request(out, nonce):
    """Write a client request (VN 4, mode 3) into out; return 48.

    nonce: 8 bytes for the transmit timestamp. The server copies them back as
    the originate timestamp; random ones both match the reply to this request
    and keep the hub's own clock (maybe still at 2000-01-01) off the wire."""
    if len(out) < sntp.PACKET or len(nonce) != 8:
        raise sntp.SntpError("request needs a 48-byte buffer and an 8-byte nonce")
    for i in range(40):
        out[i] = 0
    out[0] = (4 << 3) | _MODE_CLIENT
    for i in range(8):
        out[40 + i] = nonce[i]
    return sntp.PACKET


def _ms(buf, at):
    # UNIX milliseconds (an int: exact on every port) for the NTP timestamp at buf[at:at + 8].
    sec, frac = struct.unpack_from(">II", buf, at)
    s = sec - sntp.NTP_UNIX_OFFSET
    if not sec & 0x80000000:
        s += _ERA  # RFC 4330 eras, as in from_ntp
    return s * 1000 + (frac * 1000 >> 32)


def parse_reply(buf, n, nonce):
    """Check a server's reply to the request sent with nonce; return
    (stratum, t2_ms, t3_ms): when the server received it and when it answered
    (UNIX ms). Raises KissOfDeath, or SntpError saying why the reply is unusable."""
    if n > len(buf):
        n = len(buf)
    if n < sntp.PACKET:
        raise sntp.SntpError("short reply (%d bytes)" % n)
    b0 = buf[0]
    vn = (b0 >> 3) & 7
    if b0 & 7 != _MODE_SERVER or vn < 3 or vn > 4:
        raise sntp.SntpError("not a server reply (mode %d, version %d)" % (b0 & 7, vn))
    for i in range(8):
        if buf[24 + i] != nonce[i]:
            raise sntp.SntpError("originate timestamp is not ours")
    stratum = buf[1]
    if stratum == _KOD_STRATUM:
        code = bytes(buf[12:16])
        raise KissOfDeath("".join(chr(c) if 32 < c < 127 else "?" for c in code))
    if stratum > _MAX_STRATUM or b0 >> 6 == _LI_ALARM:
        raise sntp.SntpError("server is not synchronised (stratum %d)" % stratum)
    delay, disp = struct.unpack_from(">II", buf, 4)
    if delay >= _MAX_ROOT or disp >= _MAX_ROOT:
        raise sntp.SntpError("root delay or dispersion over 1 s: too far from its reference")
    if struct.unpack_from(">I", buf, 40)[0] == 0:
        raise sntp.SntpError("no transmit timestamp")
    t2 = _ms(buf, 32)
    t3 = _ms(buf, 40)
    if t3 < t2:
        raise sntp.SntpError("server answered before it received")
    return stratum, t2, t3


def plausible_delay(rtt):
    """The round trip (ms) the client keeps: a small negative one, an artefact
    of whole-ms timestamps on a fast link, is 0; -1 for one no clock could
    give (further below 0) or one too long to say much (over _MAX_DELAY_MS)."""
    if rtt < -_QUANTUM_MS or rtt > _MAX_DELAY_MS:
        return -1
    return rtt if rtt > 0 else 0


def offset(t1, t2, t3, t4):
    """(offset, round-trip delay) from the four timestamps (RFC 4330 section 5):
    t1 sent and t4 received on the local clock, t2 and t3 on the server's."""
    return ((t2 - t1) + (t3 - t4)) // 2, (t4 - t1) - (t3 - t2)


class SntpClient:
    def __init__(self, board, tcfg, budget=None):
        self.board = board
        self.servers = [(s["ip"], s["port"]) for s in tcfg["servers"]]
        self.poll_ms = tcfg["poll_s"] * 1000
        self.budget = budget
        self.buf = bytearray(sntp.PACKET)
        self.i = 0  # the server asked next
        self.denied = {}  # server index -> ticks_ms when it said DENY/RSTR
        self.c = {"sent": 0, "synced": 0, "timeouts": 0, "rejected": 0, "kisses": 0,
                  "no_socket": 0, "errors": 0}
        self.offset_ms = None
        self.delay_ms = None
        self.server = None
        self.stratum = None
        self.last_error = None  # why the last exchange failed (None after a good one)
        self.last_rejected = None  # the last reply that was not taken, and why

    def status(self):
        st = dict(self.c)
        st.update({"server": self.server, "stratum": self.stratum, "offset_ms": self.offset_ms,
                   "delay_ms": self.delay_ms, "last_error": self.last_error,
                   "last_rejected": self.last_rejected})
        return st

    async def run(self):
        retry = _RETRY_MIN_MS
        while True:
            if await self.poll_once():
                retry = _RETRY_MIN_MS
                await asyncio.sleep_ms(self.poll_ms)
            else:
                self.i = (self.i + 1) % len(self.servers)
                await asyncio.sleep_ms(retry)
                retry = min(retry * 2, self.poll_ms)

    def _fail(self, key, why):
        self.c[key] += 1
        self.last_error = why
        if key == "rejected":
            self.last_rejected = why
        return False

    async def poll_once(self):
        """One exchange with the current server; True if it set the clock."""
        i = self.i
        t = self.denied.get(i)
        if t is not None:
            if ticks_diff(ticks_ms(), t) < _DENIED_MS:
                return False
            del self.denied[i]
        if self.budget is not None and not self.budget.take(1):
            return self._fail("no_socket", "no socket free")
        sock = None
        try:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.setblocking(False)
            return await self._exchange(sock, self.servers[i], i)
        except OSError as e:
            return self._fail("errors", "socket: %r" % (e,))
        finally:
            if sock is not None:
                sock.close()
            if self.budget is not None:
                self.budget.give(1)

    async def _exchange(self, sock, server, i):
        nonce = os.urandom(8)
        request(self.buf, nonce)
        addr = socket.getaddrinfo(server[0], server[1])[0][-1]
        # The local clock's ms: its whole seconds need not be right (they cancel
        # out of the clock set below); the tick difference carries the precision.
        base = int(self.board.time_s() * 1000)
        t0 = ticks_ms()
        sock.connect(addr)  # replies from elsewhere are not even delivered
        sock.send(self.buf)
        self.c["sent"] += 1
        while True:
            left = _TIMEOUT_MS - ticks_diff(ticks_ms(), t0)
            if left <= 0:
                return self._fail("timeouts", "no reply from %s" % server[0])
            try:
                data = await asyncio.wait_for_ms(_recv(self.board, sock), left)
            except asyncio.TimeoutError:
                return self._fail("timeouts", "no reply from %s" % server[0])
            t4 = base + ticks_diff(ticks_ms(), t0)
            try:
                stratum, t2, t3 = parse_reply(data, len(data), nonce)
            except KissOfDeath as e:
                if e.code in ("DENY", "RSTR"):
                    self.denied[i] = ticks_ms()
                return self._fail("kisses", "%s from %s" % (e, server[0]))
            except sntp.SntpError as e:
                # Not the answer (a stray or forged datagram): keep waiting for it.
                self._fail("rejected", "%s from %s" % (e, server[0]))
                continue
            off, got = offset(base, t2, t3, t4)
            rtt = plausible_delay(got)
            if rtt < 0:
                return self._fail("rejected", "round trip %d ms to %s" % (got, server[0]))
            self.board.set_time_ms(t4 + off)
            self.offset_ms, self.delay_ms, self.server = off, rtt, server[0]
            self.stratum = stratum
            self.c["synced"] += 1
            self.last_error = None
            return True


async def _recv(board, sock):
    while True:
        await board.wait_readable(sock)
        try:
            return sock.recv(64)
        except OSError:  # e.g. ICMP port unreachable from an earlier datagram
            await asyncio.sleep_ms(100)
