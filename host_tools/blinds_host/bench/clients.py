"""The programs the benchmarks run inside the home's namespaces.

    python -m blinds_host.bench.clients KIND < args.json      (result: JSON on stdout)
    python -m blinds_host.bench.clients server --listen IP:PORT

The harness starts them with ``ip netns exec`` (:func:`~.harness.spawn_client`).
Every client times with ``time.perf_counter`` on its own side of the wire.

DNS clients: ``udp-client`` (queries to the hub or to dnsmasq, a window of them
outstanding) and ``dot-client`` (one kept-open TLS connection straight to the
resolver, queries padded as the hub pads its own).

Stream clients and their peer: ``server`` is a small TCP server (one thread per
connection) that speaks a 9-byte header (``!BQ``: mode, byte count), which the
relay names by the device's DNS binding (its first byte is neither a TLS
handshake nor an upper-case HTTP method):

* ``SOURCE`` (1): the server sends N bytes and closes;
* ``SINK`` (2): the server reads N bytes, answers their count (``!Q``), closes;
* ``ECHO`` (3): the server echoes until EOF.

``bulk-client`` moves N bytes one way, ``http-client`` makes short HTTP
requests, ``hold-client`` keeps several ECHO streams open and busy.
"""

import json
import os
import select
import socket
import ssl
import struct
import sys
import threading
import time

from ..home import AP_IP

SOURCE, SINK, ECHO = 1, 2, 3
_HEADER = struct.Struct("!BQ")
_COUNT = struct.Struct("!Q")
_CHUNK = 1 << 20
MIB = 1 << 20


def recv_exact(sock, n):
    """Exactly ``n`` bytes from ``sock``; EOFError if it closes first."""
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise EOFError("connection closed after %d of %d bytes" % (len(buf), n))
        buf += chunk
    return bytes(buf)


# -- DNS ---------------------------------------------------------------------------------
def encode_query(qid, name, qtype=1, pad_to=0):
    """A recursive query (RD set). With ``pad_to``, an EDNS(0) OPT record whose
    padding option (RFC 7830) makes the message a multiple of ``pad_to`` bytes,
    as the hub pads its own upstream queries."""
    q = bytearray(struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 1 if pad_to else 0))
    for label in name.rstrip(".").split("."):
        b = label.encode("ascii")
        q.append(len(b))
        q += b
    q += b"\0" + struct.pack("!HH", qtype, 1)
    if pad_to:
        # OPT RR: root name, type 41, UDP size 1232, ttl 0, rdlength; one padding option.
        fixed = len(q) + 11 + 4
        pad = (-fixed) % pad_to
        q += (b"\0" + struct.pack("!HHIH", 41, 1232, 0, 4 + pad) + struct.pack("!HH", 12, pad)
              + bytes(pad))
    return bytes(q)


def reply_rcode(msg):
    """The RCODE of a DNS reply."""
    return msg[3] & 15


def udp_client(server, queries, window=1, timeout_s=3.0, retries=0, gap_ms=0, port=53,
               deadline_s=None):
    """Send ``queries`` ([(name, qtype)]) to server over UDP, at most ``window``
    outstanding; a query unanswered after ``timeout_s`` is sent again up to
    ``retries`` times. Returns [(rcode or None, ms of the answered try, tries)]
    in query order; the time is from the last send to the answer. After
    ``deadline_s`` seconds in all, whatever is unanswered stays None."""
    end = None if deadline_s is None else time.perf_counter() + deadline_s
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.connect((server, port))
    s.setblocking(False)
    results = [None] * len(queries)
    outstanding = {}  # qid -> [index, sent_at, tries, wire]
    nxt = 0
    done = 0
    base = int.from_bytes(os.urandom(2), "big")
    while done < len(queries):
        if end is not None and time.perf_counter() > end:
            break
        while nxt < len(queries) and len(outstanding) < window:
            qid = (base + nxt) & 0xFFFF
            wire = encode_query(qid, *queries[nxt])
            outstanding[qid] = [nxt, time.perf_counter(), 1, wire]
            s.send(wire)
            nxt += 1
            if gap_ms and window == 1:
                break
        # time out or resend
        now = time.perf_counter()
        for qid, o in list(outstanding.items()):
            if now - o[1] >= timeout_s:
                if o[2] <= retries:
                    o[1] = time.perf_counter()
                    o[2] += 1
                    s.send(o[3])
                else:
                    results[o[0]] = (None, None, o[2])
                    del outstanding[qid]
                    done += 1
        if not outstanding:
            if gap_ms and nxt < len(queries):
                time.sleep(gap_ms / 1000.0)
            continue
        wait = max(0.0, min(o[1] + timeout_s for o in outstanding.values()) - time.perf_counter())
        r, _, _ = select.select([s], [], [], wait)
        if not r:
            continue
        while True:
            try:
                msg = s.recv(4096)
            except BlockingIOError:
                break
            t = time.perf_counter()
            if len(msg) < 12:
                continue
            o = outstanding.pop(struct.unpack("!H", msg[:2])[0], None)
            if o is None:
                continue  # a late answer to a resent query
            results[o[0]] = (reply_rcode(msg), (t - o[1]) * 1000.0, o[2])
            done += 1
        if gap_ms and window == 1 and nxt < len(queries):
            time.sleep(gap_ms / 1000.0)
    s.close()
    return [r if r is not None else (None, None, 0) for r in results]


def dot_client(server, tls_name, ca_file, queries, warmup=("resolver.test",), gap_ms=0, pad_to=128,
               port=853, timeout_s=5.0):
    """Time each of ``queries`` ([(name, qtype)]) over one TLS connection to a
    DoT server, one at a time, as the hub sends them (EDNS padding to 128
    bytes). The TLS handshake and ``warmup`` queries are not timed. Returns
    [(rcode, ms)]."""
    ctx = ssl.create_default_context(cafile=ca_file)
    raw = socket.create_connection((server, port), timeout=timeout_s)
    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s = ctx.wrap_socket(raw, server_hostname=tls_name)
    out = []
    qid = int.from_bytes(os.urandom(2), "big")
    try:
        asked = [(False, (w, 1)) for w in warmup] + [(True, q) for q in queries]
        for timed, (name, qtype) in asked:
            qid = (qid + 1) & 0xFFFF
            wire = encode_query(qid, name, qtype, pad_to=pad_to)
            t = time.perf_counter()
            s.sendall(struct.pack("!H", len(wire)) + wire)
            while True:
                n = struct.unpack("!H", recv_exact(s, 2))[0]
                msg = recv_exact(s, n)
                if msg[:2] == wire[:2]:
                    break
            ms = (time.perf_counter() - t) * 1000.0
            if timed:
                out.append((reply_rcode(msg), ms))
                if gap_ms:
                    time.sleep(gap_ms / 1000.0)
    finally:
        s.close()
    return out


def _resolve(name, server=AP_IP):
    """Resolve ``name`` through the hub (so that the hub binds it to this device)."""
    res = udp_client(server, [(name, 1)], timeout_s=2.0, retries=2)
    if res[0][0] != 0:
        raise RuntimeError("the hub did not resolve %s: %r" % (name, res[0]))


# -- the stream server (internet namespace) ------------------------------------------------
def _read_n(sock, n):
    """Read (and drop) ``n`` bytes, or until EOF: (bytes read, perf_counter at
    the first byte or None)."""
    buf = bytearray(_CHUNK)
    got = 0
    first = None
    while got < n:
        k = sock.recv_into(buf)
        if not k:
            break
        if first is None:
            first = time.perf_counter()
        got += k
    return got, first


def _serve_conn(conn, block):
    try:
        mode, n = _HEADER.unpack(recv_exact(conn, _HEADER.size))
        if mode == SOURCE:
            view = memoryview(block)
            left = n
            while left:
                k = min(left, len(block))
                conn.sendall(view[:k])
                left -= k
        elif mode == SINK:
            conn.sendall(_COUNT.pack(_read_n(conn, n)[0]))
        elif mode == ECHO:
            buf = bytearray(65536)
            view = memoryview(buf)
            while True:
                k = conn.recv_into(buf)
                if not k:
                    break
                conn.sendall(view[:k])
    except (OSError, EOFError):
        pass
    finally:
        conn.close()


def serve(host, port):
    """The stream peer: one thread per connection (see the module's docstring)."""
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((host, port))
    ls.listen(128)
    block = os.urandom(_CHUNK)
    print("bench server on %s:%d" % (host, port), flush=True)
    while True:
        conn, _ = ls.accept()
        threading.Thread(target=_serve_conn, args=(conn, block), daemon=True).start()


# -- stream clients (device or hub namespace) --------------------------------------------
def bulk_client(host, port, direction, nbytes, resolve=None, timeout_s=300.0):
    """One bulk transfer of ``nbytes``: ``down`` (SOURCE: the server sends) or
    ``up`` (SINK: the client sends, the server acknowledges the count). Timed
    from the request (after connect) to the last byte (down) or the
    acknowledgement (up)."""
    if resolve:
        _resolve(resolve)
    s = socket.create_connection((host, port), timeout=timeout_s)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * MIB)
    try:
        t0 = time.perf_counter()
        first = None
        if direction == "down":
            s.sendall(_HEADER.pack(SOURCE, nbytes))
            got, first = _read_n(s, nbytes)
        elif direction == "up":
            s.sendall(_HEADER.pack(SINK, nbytes))
            view = memoryview(os.urandom(_CHUNK))
            left = nbytes
            while left:
                k = min(left, _CHUNK)
                s.sendall(view[:k])
                left -= k
            got = _COUNT.unpack(recv_exact(s, _COUNT.size))[0]
        else:
            raise ValueError("direction is down or up, not %r" % (direction,))
        t1 = time.perf_counter()
    finally:
        s.close()
    secs = t1 - t0
    return {"direction": direction, "bytes": got, "complete": got == nbytes,
            "seconds": round(secs, 4),
            "mb_s": round(got / secs / 1e6, 2) if secs > 0 else None,
            "first_byte_ms": round((first - t0) * 1000, 3) if first is not None else None}


def http_client(host, port, hostname, n, gap_ms=5, warmup=0, resolve=None, timeout_s=5.0):
    """``n`` short HTTP requests (a new connection each, ``Connection: close``);
    for each, ms from the start of ``connect()`` to the first response byte, or
    None if the response was not a whole 200. ``warmup`` more before, untimed."""
    if resolve:
        _resolve(resolve)
    req = ("GET / HTTP/1.1\r\nHost: %s\r\nUser-Agent: blinds-bench\r\nConnection: close\r\n\r\n"
           % hostname).encode()
    out = []
    for i in range(warmup + n):
        ms = None
        s = None
        try:
            t = time.perf_counter()
            s = socket.create_connection((host, port), timeout=timeout_s)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            s.sendall(req)
            body = s.recv(65536)
            t1 = time.perf_counter()
            while True:
                more = s.recv(65536)
                if not more:
                    break
                body += more
            if body.startswith(b"HTTP/1.1 200") and b"hello from" in body:
                ms = (t1 - t) * 1000.0
        except OSError:
            pass
        finally:
            if s is not None:
                s.close()
        if i >= warmup:
            out.append(ms)
        if gap_ms:
            time.sleep(gap_ms / 1000.0)
    return out


def hold_client(host, port, streams, seconds, interval_ms=100, msg_bytes=1024, resolve=None,
                timeout_s=5.0):
    """Open ``streams`` ECHO streams at once and keep them busy for ``seconds``:
    every ``interval_ms`` each sends ``msg_bytes`` and reads them back. A stream
    that fails is counted and left alone; the others go on."""
    socks = []
    errors = []
    if resolve:
        try:
            _resolve(resolve)
        except (OSError, RuntimeError) as e:
            now = time.time()
            return {"streams": streams, "ok": 0, "rounds": 0, "echoed": [0] * streams,
                    "opened": now, "closed": now, "errors": ["resolve: %s" % e]}
    for i in range(streams):
        try:
            s = socket.create_connection((host, port), timeout=timeout_s)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            s.sendall(_HEADER.pack(ECHO, 0))
            socks.append(s)
        except OSError as e:
            errors.append("open %d: %s" % (i, e))
            socks.append(None)
    opened = time.time()
    msg = os.urandom(msg_bytes)
    echoed = [0] * streams
    failed = [s is None for s in socks]
    rounds = 0
    end = time.perf_counter() + seconds
    while time.perf_counter() < end and not all(failed):
        for j, s in enumerate(socks):
            if not failed[j]:
                try:
                    s.sendall(msg)
                except OSError as e:
                    failed[j] = True
                    errors.append("send %d: %s" % (j, e))
        for j, s in enumerate(socks):
            if not failed[j]:
                try:
                    if recv_exact(s, msg_bytes) == msg:
                        echoed[j] += 1
                    else:
                        failed[j] = True
                        errors.append("stream %d: wrong bytes back" % j)
                except (OSError, EOFError) as e:
                    failed[j] = True
                    errors.append("recv %d: %s" % (j, e))
        rounds += 1
        time.sleep(interval_ms / 1000.0)
    closed = time.time()
    for s in socks:
        if s is not None:
            s.close()
    ok = sum(1 for j in range(streams) if not failed[j] and echoed[j] == rounds)
    return {"streams": streams, "ok": ok, "rounds": rounds, "echoed": echoed, "opened": opened,
            "closed": closed, "errors": errors[:8]}


CLIENTS = {"udp-client": udp_client, "dot-client": dot_client, "bulk-client": bulk_client,
           "http-client": http_client, "hold-client": hold_client}


def main(argv):
    """Run one client (arguments as JSON on stdin, result as JSON on stdout) or the server."""
    if argv[:1] == ["server"] and len(argv) == 3 and argv[1] == "--listen":
        host, port = argv[2].rsplit(":", 1)
        serve(host, int(port))
        return 0
    if len(argv) != 1 or argv[0] not in CLIENTS:
        raise SystemExit("usage: python -m blinds_host.bench.clients server --listen IP:PORT\n"
                         "       python -m blinds_host.bench.clients %s < args.json"
                         % "|".join(CLIENTS))
    args = json.load(sys.stdin)
    if "queries" in args:
        args["queries"] = [tuple(q) for q in args["queries"]]
    json.dump(CLIENTS[argv[0]](**args), sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
