"""The exit's load benchmark: how many homes one exit core carries.

``run()`` starts a real exit (a ``blinds exit`` subprocess on 127.0.0.1) and
``n_hubs`` fake hubs in this process, each carrying an IoT-like home's load:

* ``devices`` persistent streams (MQTT-like): every ``telemetry_s`` each sends a
  ~100-byte message and gets a ~40-byte answer;
* an API poll per device every ``poll_s``: a new stream, ~400 bytes up,
  ~4 KB down, closed;
* a DNS query per home every ``dns_s``, a PING every 15 s.

The servers are this process's (127.0.0.2) and so is the DNS responder the exit
asks (``--resolver udp:127.0.0.3:PORT``): nothing leaves the machine. The exit's
CPU time comes from /proc over the measured window; ``homes_per_core`` is
``n_hubs / (cpu seconds / wall seconds)``.

    python -m blinds_host.exit.loadgen [--hubs 100] [--seconds 20]
"""

import argparse
import asyncio
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

from blinds.dns import wire as dnswire
from blinds.dns.upstream import make_query

from .. import pki
from . import hubs, wire
from .fakehub import FakeHub
from .server import pid_rss_kb

UPSTREAM_IP = "127.0.0.2"
DNS_IP = "127.0.0.3"
SERVICE_NAME = "iot.loadgen.test"


def _free_port(ip):
    with socket.socket() as s:
        s.bind((ip, 0))
        return s.getsockname()[1]


async def _serve_iot(reader, writer):
    """Each line "N ..." gets N bytes back; the connection lives as the client wants."""
    try:
        while True:
            line = await reader.readline()
            if not line:
                break
            n = int(line.split(b" ", 1)[0])
            writer.write(b"x" * (n - 1) + b"\n")
            await writer.drain()
    except (OSError, ValueError):
        pass
    writer.close()


class _Dns(asyncio.DatagramProtocol):
    """Answers every A query with UPSTREAM_IP."""

    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        try:
            parsed = dnswire.parse_query(data, len(data))
        except dnswire.DnsError:
            return
        out = bytearray(512)
        n = dnswire.build_reply(out, data, parsed[5], dnswire.NOERROR,
                                [(dnswire.T_A, 60, socket.inet_aton(UPSTREAM_IP))])
        self.transport.sendto(bytes(out[:n]), addr)


def _cpu_s(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class _Home:
    def __init__(self, hub, rng, devices, telemetry_s, poll_s, dns_s, stats):
        self.hub, self.rng, self.stats = hub, rng, stats
        self.devices, self.telemetry_s = devices, telemetry_s
        self.poll_s, self.dns_s = poll_s, dns_s

    def pause(self, mean_s, until):
        """Sleep about mean_s; False when that would pass ``until``."""
        delay = self.rng.uniform(0.5, 1.5) * mean_s
        if time.monotonic() + delay > until:
            return None
        return asyncio.sleep(delay)

    async def device(self, port, until):
        s = await self.hub.open(SERVICE_NAME, port)
        buf = b""
        while (nap := self.pause(self.telemetry_s, until)) is not None:
            await nap
            t = time.monotonic()
            await s.send(b"40 " + b"t" * 96 + b"\n")
            while not buf.endswith(b"\n"):
                chunk = await s.recv()
                if not chunk:
                    raise ConnectionError("telemetry stream closed by the exit")
                buf += chunk
            buf = b""
            self.stats["rtt"].append(time.monotonic() - t)
            self.stats["messages"] += 1
            if self.rng.random() < 1.0 / max(1.0, self.poll_s / self.telemetry_s):
                await self.poll(port)
        s.close()

    async def poll(self, port):
        s = await self.hub.open(SERVICE_NAME, port)
        await s.send(b"4096 " + b"p" * 394 + b"\n")
        got = 0
        while got < 4096:
            chunk = await s.recv()
            if not chunk:
                break
            got += len(chunk)
        s.close()
        self.stats["polls"] += 1

    async def dns(self, until):
        qid = 1
        while (nap := self.pause(self.dns_s, until)) is not None:
            await nap
            q = bytearray(make_query(SERVICE_NAME, dnswire.T_A))
            q[0:2] = qid.to_bytes(2, "big")
            qid = qid % 65535 + 1
            await self.hub.dns(bytes(q))
            self.stats["dns"] += 1

    async def run(self, port, until):
        tasks = [self.device(port, until) for _ in range(self.devices)] + [self.dns(until)]
        for r in await asyncio.gather(*tasks, return_exceptions=True):
            if isinstance(r, BaseException):
                self.stats["errors"] += 1
                kinds = self.stats["error_kinds"]
                key = type(r).__name__ + ": " + str(r)[:60]
                kinds[key] = kinds.get(key, 0) + 1


def _keys(wd, n):
    pki.make_ca(wd)
    pki.make_server_cert(wd, "exit", ["exit.test"], ["127.0.0.1"])
    with ThreadPoolExecutor(4) as pool:
        entries = list(pool.map(lambda i: hubs.keygen("home-%d" % i, os.path.join(
            wd, "hub-%d" % i)), range(n)))
    with open(os.path.join(wd, "hubs.json"), "w") as f:
        json.dump({"hubs": entries}, f)


async def _drive(wd, exit_port, up_port, n_hubs, seconds, devices, telemetry_s, poll_s, dns_s,
                 shaper_ms, pid, seed):
    rng = random.Random(seed)
    stats = {"rtt": [], "messages": 0, "polls": 0, "dns": 0, "errors": 0, "error_kinds": {}}
    fakes = []
    for i in range(n_hubs):
        d = os.path.join(wd, "hub-%d" % i)
        kind = wire.SHAPER_CONSTANT if shaper_ms else wire.SHAPER_NONE
        h = FakeHub(os.path.join(d, "hub.pem"), os.path.join(d, "hub.key"),
                    os.path.join(wd, "ca.pem"), "exit.test", shaper=kind,
                    interval_ms=shaper_ms or 0)
        fakes.append(await h.connect("127.0.0.1", exit_port))
    warm_s = min(5.0, seconds / 4)
    until = time.monotonic() + warm_s + seconds
    homes = [_Home(h, random.Random(rng.random()), devices, telemetry_s, poll_s, dns_s, stats)
             for h in fakes]
    load = asyncio.gather(*(home.run(up_port, until) for home in homes))
    await asyncio.sleep(warm_s)
    cpu0, t0 = _cpu_s(pid), time.monotonic()
    await load
    cpu1, t1 = _cpu_s(pid), time.monotonic()
    for h in fakes:
        await h.close()
    return stats, cpu1 - cpu0, t1 - t0


def run(n_hubs=100, seconds=20.0, devices=8, telemetry_s=10.0, poll_s=60.0, dns_s=10.0,
        shaper_ms=0, seed=1, workdir=None):
    """Drive an exit with n_hubs simulated homes; return the figures (a dict)."""
    wd = workdir or tempfile.mkdtemp(prefix="blinds-exit-load-")
    _keys(wd, n_hubs)
    exit_port = _free_port("127.0.0.1")

    async def main():
        up = await asyncio.start_server(_serve_iot, UPSTREAM_IP, 0)
        loop = asyncio.get_running_loop()
        dns_t, _ = await loop.create_datagram_endpoint(_Dns, local_addr=(DNS_IP, 0))
        dns_port = dns_t.get_extra_info("sockname")[1]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
        log = open(os.path.join(wd, "exit.log"), "wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "blinds_host.cli", "exit", "--listen",
             "127.0.0.1:%d" % exit_port, "--cert", os.path.join(wd, "exit.pem"), "--key",
             os.path.join(wd, "exit.key"), "--hubs", os.path.join(wd, "hubs.json"),
             "--allow-private", "127.0.0.0/8", "--resolver", "udp:%s:%d" % (DNS_IP, dns_port),
             "--open-rate", "100", "--max-streams", str(4 * devices + 8)],
            stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            for _ in range(100):
                try:
                    socket.create_connection(("127.0.0.1", exit_port), 0.2).close()
                    break
                except OSError:
                    await asyncio.sleep(0.1)
            stats, cpu_s, wall_s = await _drive(
                wd, exit_port, up.sockets[0].getsockname()[1], n_hubs, seconds, devices,
                telemetry_s, poll_s, dns_s, shaper_ms, proc.pid, seed)
            rss = pid_rss_kb(proc.pid)
        finally:
            proc.terminate()
            proc.wait(10)
            log.close()
            up.close()
            dns_t.close()
        return stats, cpu_s, wall_s, rss

    stats, cpu_s, wall_s, rss = asyncio.run(main())
    rtt = sorted(stats["rtt"])
    core = cpu_s / wall_s if wall_s else 0.0
    return {
        "hubs": n_hubs, "devices_per_home": devices, "seconds": round(wall_s, 1),
        "shaper_interval_ms": shaper_ms,
        "exit_cpu_core_fraction": round(core, 4),
        "homes_per_core": round(n_hubs / core) if core > 0 else None,
        "exit_rss_kb": rss,
        "messages": stats["messages"], "polls": stats["polls"], "dns_queries": stats["dns"],
        "errors": stats["errors"], "error_kinds": stats["error_kinds"],
        "rtt_p50_ms": round(1000 * rtt[len(rtt) // 2], 2) if rtt else None,
        "rtt_p95_ms": round(1000 * rtt[int(len(rtt) * 0.95)], 2) if rtt else None,
    }


def bench(n_hubs=100, seconds=20.0):
    """The figures for `make bench`: homes per core without shaping and with the
    constant shaper at 50 ms."""
    return {"none": run(n_hubs, seconds), "constant_50ms": run(n_hubs, seconds, shaper_ms=50)}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--hubs", type=int, default=100)
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--devices", type=int, default=8)
    p.add_argument("--shaper-ms", type=int, default=0, help="constant shaper interval (0: none)")
    a = p.parse_args(argv)
    print(json.dumps(run(a.hubs, a.seconds, a.devices, shaper_ms=a.shaper_ms), indent=1))


if __name__ == "__main__":
    main()
