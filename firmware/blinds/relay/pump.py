# The relay's copy loops (blinds.relay.streams admits, connects and ends a
# stream; this copies it): pump() copies one direction of a direct stream
# through the relay's one scratch buffer, pump_up() runs the upward copy as
# the stream's second task and says how it ended.
import asyncio

from blinds.compat import const, ticks_ms

_BURST = const(8)  # chunks copied before a stream yields to the event loop
_PIECE = const(1024)  # what a slow peer's pending bytes are held in


async def send_all(board, dst, buf, off, n):
    while n:
        w = dst.write(buf, off, n)
        if w:
            off += w
            n -= w
        else:
            await board.wait_writable(dst)


async def pump(relay, st, src, dst, upward):
    # Copy src -> dst until EOF, through the relay's one scratch buffer:
    # between readinto and write nothing else runs, so every stream can
    # share it, and a stream costs no buffer of its own. Only when the
    # peer takes less than a chunk is the rest copied (and held until it
    # is taken). Sockets are tried before waiting on them: a wait is a
    # pass through the event loop.
    board = relay.board
    wait_r = board.wait_readable
    buf = relay.scratch
    burst = 0
    pacer = st.pacer if upward else None
    while True:
        if pacer is None:
            n = src.readinto(buf)
        else:  # a paced device's upload: one read when its time has come
            d = pacer.wait()
            if d:
                burst = 0
                await asyncio.sleep_ms(d)
            n = pacer.read(src, buf)
        if n is None:
            burst = 0
            await wait_r(src)
            continue
        if not n:
            return
        st.last = ticks_ms()
        if upward:
            st.bytes_up += n
        else:
            st.bytes_down += n
        st.dev.carried(n)  # the WiFi cover's level counts it (blinds.devices)
        w = dst.write(buf, 0, n) or 0
        if w < n:
            # Copied out in pieces: a fragmented heap that has no room
            # for one 8 KB block still has room for 1 KB ones.
            mv = relay.scratch_mv
            rest = [bytes(mv[i:min(i + _PIECE, n)]) for i in range(w, n, _PIECE)]
            for piece in rest:
                await send_all(board, dst, piece, 0, len(piece))
        burst += 1
        if burst >= _BURST:
            # A bulk stream must not starve DNS and the other streams.
            burst = 0
            await asyncio.sleep_ms(0)


async def pump_up(relay, st):
    # The device -> upstream copy, the stream's second task.
    try:
        await pump(relay, st, st.down, st.up, True)
    except asyncio.CancelledError:
        return
    except Exception as e:  # a device reset (ECONNRESET) or anything else
        # ends the stream now: its sockets and budget go back at once.
        if isinstance(e, OSError):
            relay.stats["device_reset"] += 1
            st.result = "reset by device"
        else:
            relay.stats["errors"] += 1
            st.result = "internal error"
            relay.board.log("relay: upward copy of %s failed: %r" % (st.name, e))
        st.main.cancel()
        return
    # Device EOF (a half-close, or a close): from now on the stream ends
    # after half_close_ms without upstream data, not the full idle time.
    st.half = True
    st.last = ticks_ms()
