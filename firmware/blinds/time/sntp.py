# SNTP server packet logic (RFC 4330): the hub answers its devices' time queries
# so they need not reach a public NTP pool. (The client side, which sets the
# hub's own clock, is blinds.time.client: loaded only when configured.)
#
# reply() fills a caller-owned 48-byte buffer with struct.pack_into and allocates
# nothing else (with integer time on a 64-bit port it runs under heap_lock).
# On ports with single-precision floats (ESP32) pass whole seconds as an int and
# the fraction in now_us: a float cannot hold UNIX seconds to the microsecond.

import struct

from blinds.compat import const


PACKET = const(48)
NTP_UNIX_OFFSET = const(2208988800)  # seconds from 1900-01-01 to 1970-01-01
REFID = b"BLND"

_MODE_CLIENT = const(3)
_MODE_SERVER = const(4)
_LI_ALARM = const(3)  # clock not synchronised
_STRATUM = const(2)
_STRATUM_UNSYNC = const(16)
_PRECISION = const(-20)  # about 1 us, log2 seconds
_ROOT_DELAY = const(0x00000200)  # 16.16 s: ~8 ms to our upstream
_ROOT_DISP = const(0x00000400)  # 16.16 s: ~16 ms
_ERA = const(0x100000000)


class SntpError(ValueError):
    pass


def _sec(now_s, now_us):
    # NTP seconds, mod 2^32 (era 0 until 2036, then wrapping as RFC 4330 expects).
    if isinstance(now_s, int):
        sec = now_s + now_us // 1000000
    else:
        t = now_s + now_us / 1000000
        sec = int(t)
        if sec > t:
            sec -= 1  # floor, for times before 1970
    return (sec + NTP_UNIX_OFFSET) % _ERA


def _frac(now_s, now_us):
    # 32-bit binary fraction of the second; the integer path uses no floats.
    if isinstance(now_s, int):
        return ((now_us % 1000000) << 32) // 1000000
    t = now_s + now_us / 1000000
    sec = int(t)
    if sec > t:
        sec -= 1
    # t - sec is exact and in [0, 1); scaling by 2^32 is exact too, so no clamp.
    return int((t - sec) * 4294967296.0)


def to_ntp(unix_s, unix_us=0):
    """NTP timestamp (sec, frac) for UNIX time unix_s (+ unix_us microseconds)."""
    return _sec(unix_s, unix_us), _frac(unix_s, unix_us)


def from_ntp(sec, frac):
    """UNIX seconds (float) for an NTP timestamp; RFC 4330 section 3 eras:
    seconds with the top bit clear are taken to be after 2036-02-07.
    With single-precision floats (ESP32) the result is only good to minutes."""
    s = sec - NTP_UNIX_OFFSET
    if not sec & 0x80000000:
        s += _ERA
    return s + frac / 4294967296.0


def reply(request, n, now_s, out, synced=True, refid=REFID, ref_s=None, now_us=0):
    """Write the reply to request[:n] into out; return 48, or 0 to drop it.

    now_s: current UNIX time (int or float; with an int, now_us adds microseconds).
    synced=False marks the answer as untrustworthy (LI=3, stratum 16).
    refid: 4 bytes, e.g. the upstream server's IPv4 address.
    ref_s: UNIX time the clock was last set (int), default now.
    """
    if len(out) < PACKET:
        raise SntpError("reply buffer shorter than 48 bytes")
    if n > len(request):
        n = len(request)
    if n < PACKET:
        return 0
    b0 = request[0]
    mode = b0 & 7
    vn = (b0 >> 3) & 7
    if mode != _MODE_CLIENT or vn < 1 or vn > 4:
        return 0
    if synced:
        li = 0
        stratum = _STRATUM
    else:
        li = _LI_ALARM
        stratum = _STRATUM_UNSYNC
    poll = request[2]
    if poll > 127:
        poll -= 256
    # Two int-returning helpers rather than one returning a tuple: no allocation.
    sec = _sec(now_s, now_us)
    frac = _frac(now_s, now_us)
    rsec = sec if ref_s is None else _sec(int(ref_s), 0)
    struct.pack_into(
        ">BBbbII4sII",
        out,
        0,
        (li << 6) | (vn << 3) | _MODE_SERVER,
        stratum,
        poll,
        _PRECISION,
        _ROOT_DELAY,
        _ROOT_DISP,
        refid,
        rsec,
        0,
    )
    # Originate = the client's transmit timestamp, copied verbatim (RFC 4330 sec 5).
    for i in range(8):
        out[24 + i] = request[40 + i]
    struct.pack_into(">IIII", out, 32, sec, frac, sec, frac)
    return PACKET
