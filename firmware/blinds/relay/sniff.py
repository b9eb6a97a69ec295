# Which name a stream is for, from its first bytes: the TLS ClientHello's SNI,
# else the HTTP Host header, else the name this device last resolved that it
# may reach on this port (a stream that carries no name, as MQTT does).
import asyncio

from blinds.compat import const, ticks_diff, ticks_ms
from blinds.relay import httphost, sni

_TLS_HANDSHAKE = const(22)
_CHUNK = const(512)


class Refused(Exception):
    # A stream the relay ends with a reset; args[0] says why (the stream log).
    pass


async def read_some(board, s, buf, timeout_ms):
    # -> bytes read, 0 on EOF, None on timeout.
    try:
        return await asyncio.wait_for_ms(_readinto(board, s, buf), timeout_ms)
    except asyncio.TimeoutError:
        return None


async def _readinto(board, s, buf):
    while True:
        await board.wait_readable(s)
        n = s.readinto(buf)
        if n is not None:
            return n


def ip_literal(name):
    # A numeric last label (1.2.3.4) or an IPv6 literal: not a name to relay
    # by. An address from a device would bypass the policy and the guard's
    # view of what the name is.
    if ":" in name or "[" in name:
        return True
    last = name.rpartition(".")[2]
    return bool(last) and last.isdigit()


async def sniff(relay, st):
    """Read the stream's first bytes and set st.name and st.kind; return the
    bytes read (they go upstream once the name is allowed)."""
    s = st.down
    t0 = ticks_ms()
    b1 = bytearray(1)
    board = relay.board
    while True:
        n = await read_some(board, s, b1, relay.first_byte_ms)
        if n is None:
            # Nothing from the device: a server-speaks-first protocol.
            st.kind = "none"
            st.name = bound_name(relay, st)
            return b""
        if n:
            break
        raise Refused("closed")
    if b1[0] == _TLS_HANDSHAKE:
        p = sni.SniParser()
        st.kind = "tls"
    elif 0x41 <= b1[0] <= 0x5A:  # an HTTP method starts with an upper-case letter
        p = httphost.HostParser()
        st.kind = "http"
    else:
        st.kind = "other"
        st.name = bound_name(relay, st)
        return bytes(b1)
    r = p.feed(b1)
    chunk = memoryview(bytearray(_CHUNK))
    while r == sni.NEED_MORE:
        left = relay.sniff_ms - ticks_diff(ticks_ms(), t0)
        room = p.room()
        if left <= 0 or room <= 0:
            relay.stats["bad_hello"] += 1
            raise Refused("slow hello" if left <= 0 else "bad hello")
        # Never read past what the parser may keep: what it keeps is
        # exactly what goes upstream once the name is known.
        n = await read_some(board, s, chunk[: min(_CHUNK, room)], left)
        if n is None:
            continue
        if n == 0:
            raise Refused("closed in hello")
        r = p.feed(chunk[:n])
    if r == sni.FAIL:
        relay.stats["bad_hello"] += 1
        raise Refused("bad hello")
    name = p.name if st.kind == "tls" else p.host
    if name and ip_literal(name) and not (st.kind == "http" and name == relay.ap_ip):
        # (The hub's own address in a Host header may be for its control
        # page: the relay refuses it if no local service takes it.)
        relay.stats["bad_name"] += 1
        raise Refused("address, not a name")
    st.name = name if name else bound_name(relay, st)
    return bytes(p.buffered())


def bound_name(relay, st):
    # The most recent name this device resolved that it may reach on this port.
    names = relay.names.bindings(st.dev.idx)
    for i in range(len(names) - 1, -1, -1):
        if relay.policy.allows(st.dev.mac, names[i], st.port):
            return names[i]
    relay.stats["no_name"] += 1
    return None
