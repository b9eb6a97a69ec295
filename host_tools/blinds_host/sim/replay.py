"""The replayers: one per device namespace, one for the cloud side.

    python -m blinds_host.sim.replay device --schedule S.json --index I --t0 T --speed X
                                            --dns IP --end T_END --log LOG.jsonl [--ready FILE]
    python -m blinds_host.sim.replay cloud  --schedule S.json --t0 T --speed X
                                            --end T_END --log LOG.jsonl [--ready FILE]

Times in the schedule are seconds of the recording from the replay's start;
event ``t`` happens at wall-clock ``t0 + t / speed`` (every namespace shares the
host's clock). Instead of ``--t0`` and ``--end``, ``--go FILE``: the replayer
gets ready (the cloud's listeners open, the device's schedule read), writes
``--ready``, then waits for FILE, ``{"t0": T, "end": {"device": T_END,
"cloud": T_END}}`` (the runner writes it once every replayer is ready).

Device side, per session: at its start time, under a per-device lock (so that
the name this device resolved most recently is this session's: the hub names a
stream that is neither TLS nor HTTP by that DNS binding), resolve the flow's
name with a DNS query of its own to ``--dns`` (the hub, or the plain resolver
without a hub), connect to the answer, send the 16-byte header naming the flow
and wait for the cloud's 1-byte acknowledgement; then write the uplink payloads
at their times while reading the downlink. Cloud side: one listener per
(address, port) of the schedule; a connection's header says which session it
is, and the cloud writes that session's downlink at its times.

Each side logs one JSON line per session: sizes sent and received, setup times
(DNS, connect + header -> ack) and per-event delays: an event's bytes arrive
when the bytes received reach the running total that includes it, and its
delay is that moment minus its scheduled time (so coalescing does not matter).
"""

import argparse
import asyncio
import json
import random
import signal
import socket
import struct
import sys
import time

MAGIC = b"\x00BS1"           # first byte 0: neither TLS (22) nor an HTTP method
HEADER = struct.Struct("!4sHHI4x")
ACK = b"\x06"
GRACE_S = 5.0
GO_WAIT_S = 120.0  # --go: a runner that wrote no start time by then is gone
ZEROS = memoryview(bytes(65536))


def header(dev, flow, session):
    return HEADER.pack(MAGIC, dev, flow, session)


class Log:
    def __init__(self, path):
        self.f = open(path, "a", buffering=1)

    def write(self, obj):
        self.f.write(json.dumps(obj, separators=(",", ":")) + "\n")


async def sleep_until(t):
    d = t - time.time()
    if d > 0.0005:
        await asyncio.sleep(d)


def _delays(events, arrivals, t0, speed):
    """Per event: arrival of its last byte minus its scheduled time, in ms (None: never)."""
    out = []
    i, got = 0, 0
    total = 0
    for t, n in events:
        total += n
        while i < len(arrivals) and got < total:
            got = arrivals[i][1]
            i += 1
        if got < total:
            out.append(None)
            continue
        out.append(round((arrivals[i - 1][0] - (t0 + t / speed)) * 1000.0, 2))
    return out


async def _reader(reader, arrivals, expected, done):
    got = 0
    while True:
        data = await reader.read(65536)
        if not data:
            break
        got += len(data)
        arrivals.append((time.time(), got))
        if got >= expected:
            done.set()
    done.set()


async def _writer(writer, events, t0, speed):
    late = 0.0
    sent = 0
    for t, n in events:
        due = t0 + t / speed
        now = time.time()
        if due - now > 0.0005:
            await asyncio.sleep(due - now)
        else:
            late = max(late, now - due)
        while n > 0:
            k = min(n, len(ZEROS))
            writer.write(ZEROS[:k])
            n -= k
            sent += k
        await writer.drain()
    return sent, round(late * 1000.0, 2)


# --- DNS ---------------------------------------------------------------------------


def dns_query(name, qid):
    q = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    for label in name.rstrip(".").split("."):
        q += bytes([len(label)]) + label.encode()
    return q + b"\x00" + struct.pack("!HH", 1, 1)


def _skip_name(msg, off):
    while True:
        n = msg[off]
        if n & 0xC0 == 0xC0:
            return off + 2
        if n == 0:
            return off + 1
        off += 1 + n


def dns_answer(msg, qid):
    """(rcode, first A address or None) of a reply to query ``qid``; None if not ours."""
    if len(msg) < 12:
        return None
    rid, flags, qd, an = struct.unpack_from("!HHHH", msg, 0)
    if rid != qid or not flags & 0x8000:
        return None
    off = 12
    for _ in range(qd):
        off = _skip_name(msg, off) + 4
    for _ in range(an):
        off = _skip_name(msg, off)
        rtype, _cls, _ttl, rdlen = struct.unpack_from("!HHIH", msg, off)
        off += 10
        if rtype == 1 and rdlen == 4:
            return flags & 0xF, socket.inet_ntoa(msg[off:off + 4])
        off += rdlen
    return flags & 0xF, None


async def resolve(name, server, timeout=2.0, tries=3):
    loop = asyncio.get_running_loop()
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setblocking(False)
    try:
        for _ in range(tries):
            qid = random.randrange(65536)
            await loop.sock_sendto(s, dns_query(name, qid), (server, 53))
            deadline = time.time() + timeout
            while time.time() < deadline:
                try:
                    msg = await asyncio.wait_for(loop.sock_recv(s, 2048),
                                                 max(deadline - time.time(), 0.001))
                except asyncio.TimeoutError:
                    break
                try:
                    r = dns_answer(msg, qid)
                except (IndexError, struct.error):
                    r = None
                if r is not None:
                    rcode, addr = r
                    if addr is not None:
                        return addr
                    if rcode != 2:  # only SERVFAIL is worth asking again
                        raise OSError("DNS rcode %d, no address for %s" % (rcode, name))
                    await asyncio.sleep(0.5)
                    break
        raise OSError("DNS: no answer with an address for %s" % name)
    finally:
        s.close()


# --- device side -----------------------------------------------------------------------


async def device_session(dev, flow, sidx, sess, args, lock, log, results):
    t0, speed = args.t0, args.speed
    rec = {"side": "device", "dev": dev["index"], "flow": flow["id"], "session": sidx,
           "name": flow["name"], "port": flow["port"], "t_sched": sess["start"], "ok": False}
    up_expected = sum(n for _, n in sess["up"])
    down_expected = sum(n for _, n in sess["down"])
    rec["up_expected"], rec["down_expected"] = up_expected, down_expected
    writer = None
    arrivals = []
    try:
        await sleep_until(t0 + sess["start"] / speed)
        async with lock:
            ta = time.time()
            rec["start_late_ms"] = round((ta - (t0 + sess["start"] / speed)) * 1000.0, 2)
            addr = await resolve(flow["name"], args.dns)
            tb = time.time()
            rec["dns_ms"] = round((tb - ta) * 1000.0, 2)
            rec["addr"] = addr
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(addr, flow["port"]), 10.0)
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            writer.write(header(dev["index"], flow["id"], sidx))
            await writer.drain()
            ack = await asyncio.wait_for(reader.readexactly(1), 10.0)
            tc = time.time()
            if ack != ACK:
                raise OSError("bad acknowledgement %r" % ack)
            rec["setup_ms"] = round((tc - tb) * 1000.0, 2)
        done = asyncio.Event()
        if not down_expected:
            done.set()
        rtask = asyncio.create_task(_reader(reader, arrivals, down_expected, done))
        sent, late = await _writer(writer, sess["up"], t0, speed)
        rec["up_sent"], rec["up_late_ms"] = sent, late
        deadline = t0 + sess["end"] / speed + GRACE_S
        try:
            await asyncio.wait_for(done.wait(), max(deadline - time.time(), 0.01))
        except asyncio.TimeoutError:
            pass
        rtask.cancel()
        rec["ok"] = True
    except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError) as e:
        rec["error"] = "%s: %s" % (type(e).__name__, e)
    except asyncio.CancelledError:
        rec["error"] = "unfinished at the end of the run"
        raise
    finally:
        rec["down_bytes"] = arrivals[-1][1] if arrivals else 0
        rec["down_delays_ms"] = _delays(sess["down"], arrivals, t0, speed) if arrivals else []
        if writer is not None:
            writer.close()
        log.write(rec)
        results.append(rec)


async def local_udp(dev, args, log):
    """Send the device's broadcast/multicast datagrams onto the WiFi segment."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
    sent = errors = 0
    try:
        for t, n, ip, port in dev.get("local_udp", ()):
            await sleep_until(args.t0 + t / args.speed)
            try:
                s.sendto(bytes(n), (ip, port or 9))
                sent += 1
            except OSError:
                errors += 1
    finally:
        s.close()
        log.write({"side": "device", "dev": dev["index"], "local_udp_sent": sent,
                   "local_udp_errors": errors})


async def ready_then_go(args):
    """Write ``--ready``; with ``--go``, wait for the start file and take t0 and end from it."""
    if args.ready:
        with open(args.ready, "w") as f:
            f.write("ready\n")
    if not args.go:
        return
    deadline = time.time() + GO_WAIT_S
    while True:
        try:
            with open(args.go) as f:
                go = json.load(f)
            break
        except (OSError, ValueError):
            if time.time() > deadline:
                raise SystemExit("no start time in %s after %g s" % (args.go, GO_WAIT_S))
            await asyncio.sleep(0.01)
    args.t0, args.end = float(go["t0"]), float(go["end"][args.side])


async def run_device(args):
    with open(args.schedule) as f:
        sched = json.load(f)
    dev = sched["devices"][args.index - 1]
    log = Log(args.log)
    await ready_then_go(args)
    lock = asyncio.Lock()
    results = []
    tasks = [asyncio.create_task(device_session(dev, flow, i, s, args, lock, log, results))
             for flow in dev["flows"] for i, s in enumerate(flow["sessions"])]
    if dev.get("local_udp"):
        tasks.append(asyncio.create_task(local_udp(dev, args, log)))
    if not tasks:
        return
    try:
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True),
                               max(args.end - time.time(), 0.1))
    except asyncio.TimeoutError:
        pass


# --- cloud side ----------------------------------------------------------------------------


class Cloud:
    def __init__(self, sched, args, log):
        self.sched, self.args, self.log = sched, args, log
        self.conns = set()

    async def handle(self, reader, writer):
        task = asyncio.current_task()
        self.conns.add(task)
        rec = {"side": "cloud", "ok": False}
        arrivals = []
        sess = None
        try:
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            hdr = await asyncio.wait_for(reader.readexactly(HEADER.size), 15.0)
            magic, d, fl, si = HEADER.unpack(hdr)
            if magic != MAGIC:
                raise OSError("bad header")
            rec.update(dev=d, flow=fl, session=si)
            try:
                sess = self.sched["devices"][d - 1]["flows"][fl]["sessions"][si]
            except (IndexError, KeyError):
                raise OSError("unknown session %d/%d/%d" % (d, fl, si))
            local = writer.get_extra_info("sockname")
            rec["local"] = "%s:%d" % local[:2]
            writer.write(ACK)
            await writer.drain()
            up_expected = sum(n for _, n in sess["up"])
            rec["up_expected"] = up_expected
            done = asyncio.Event()
            rtask = asyncio.create_task(_reader(reader, arrivals, 1 << 62, done))
            sent, late = await _writer(writer, sess["down"], self.args.t0, self.args.speed)
            rec["down_sent"], rec["down_late_ms"] = sent, late
            await done.wait()  # the device closes when its session is over
            rtask.cancel()
            rec["ok"] = True
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError) as e:
            rec["error"] = "%s: %s" % (type(e).__name__, e)
        except asyncio.CancelledError:
            rec["error"] = "unfinished at the end of the run"
        finally:
            rec["up_bytes"] = arrivals[-1][1] if arrivals else 0
            if sess is not None:
                rec["up_delays_ms"] = _delays(sess["up"], arrivals, self.args.t0,
                                              self.args.speed) if arrivals else []
            writer.close()
            self.log.write(rec)
            self.conns.discard(task)


async def run_cloud(args):
    with open(args.schedule) as f:
        sched = json.load(f)
    log = Log(args.log)
    cloud = Cloud(sched, args, log)
    servers = []
    addrs = sorted({(fl["ip"], fl["port"]) for d in sched["devices"] for fl in d["flows"]})
    for ip, port in addrs:
        servers.append(await asyncio.start_server(cloud.handle, ip, port, backlog=64,
                                                  reuse_address=True))
    await ready_then_go(args)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await asyncio.wait_for(stop.wait(), max(args.end - time.time(), 0.1))
    except asyncio.TimeoutError:
        pass
    for s in servers:
        s.close()
    for t in list(cloud.conns):
        t.cancel()
    await asyncio.sleep(0.2)


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m blinds_host.sim.replay")
    p.add_argument("side", choices=("device", "cloud"))
    p.add_argument("--schedule", required=True)
    p.add_argument("--index", type=int, default=0)
    p.add_argument("--t0", type=float)
    p.add_argument("--speed", type=float, default=1.0)
    p.add_argument("--dns", default="192.168.4.1")
    p.add_argument("--end", type=float)
    p.add_argument("--log", required=True)
    p.add_argument("--ready")
    p.add_argument("--go")
    args = p.parse_args(argv)
    if not args.go and (args.t0 is None or args.end is None):
        p.error("give --t0 and --end, or --go")
    if args.side == "device":
        loop = asyncio.new_event_loop()
        main_task = loop.create_task(run_device(args))
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, main_task.cancel)
        try:
            loop.run_until_complete(main_task)
        except asyncio.CancelledError:
            pass
        finally:
            # Let cancelled sessions log themselves.
            pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for t in pending:
                t.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.close()
    else:
        asyncio.run(run_cloud(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
