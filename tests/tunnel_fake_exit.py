"""FAKE tunnel exit: a test double for the hub side of docs/tunnel.md.

It speaks the protocol plainly and without limits: mutual TLS (the hub's
certificate is its own trust anchor), HELLO, TIME, OPEN by a fixed name -> IP
zone, DATA with credit both ways, CLOSE, DNS_Q answered from that zone,
PING/PONG. The real exit (``blinds exit``) serves the hub's home tests; this
one is for what a real exit would not do: ``--bad`` misbehaves after the
HELLO (cells for unknown streams, credit violations, unknown types) to test
the hub's defences; ``--mute`` goes silent after its HELLO (a dead exit).

Run: python tunnel_fake_exit.py --listen IP:PORT --cert F --key F
--hub-cert F [--zone JSON] [--window N] [--bad] [--mute]
"""

import argparse
import asyncio
import json
import socket
import ssl
import struct
import sys
import time

from blinds.tunnel import cells

H = cells.HEADER


class Conn:
    def __init__(self, args, reader, writer):
        self.args, self.r, self.w = args, reader, writer
        self.size = 0
        self.streams = {}  # sid -> [upstream writer, credit, taken since CREDIT]
        self.hub_window = 8
        self.credit_ev = {}

    def cell(self, t, sid=0, payload=b"", flags=0):
        n = len(payload)
        self.w.write(struct.pack(">BBHH", t, flags, sid, n) + payload + bytes(self.size - H - n))

    async def run(self):
        head = await self.r.readexactly(H)
        self.size = cells.hello_size(head)
        rest = await self.r.readexactly(self.size - H)
        hello = head + rest
        n = cells.u16(hello, 4)
        if n >= 7:
            self.hub_window = cells.u16(hello, H + 5)
        self.cell(cells.HELLO, self.size, bytes((1, 1)) + struct.pack(">HH", 64, self.args.window))
        self.cell(cells.TIME, 0, cells.time_payload(int(time.time() * 1000)))
        if self.args.bad:
            self.misbehave()
        await self.w.drain()
        while True:
            c = await self.r.readexactly(self.size)
            self.args.seen.append(c[0])
            if self.args.mute:
                continue  # a dead exit: it reads and never answers
            t, flags, sid, n = cells.unpack(c)
            p = c[H:H + n]
            if t == cells.OPEN:
                asyncio.create_task(self.open(sid, *cells.parse_open(c, n)))
            elif t == cells.DATA and sid in self.streams:
                s = self.streams[sid]
                s[0].write(p)
                await s[0].drain()
                s[2] += 1
                if s[2] >= self.args.window // 2:
                    self.cell(cells.CREDIT, sid, struct.pack(">H", s[2]))
                    s[2] = 0
            elif t == cells.CREDIT and sid in self.streams:
                self.streams[sid][1] += cells.u16(c)
                self.credit_ev[sid].set()
            elif t == cells.CLOSE and sid in self.streams:
                s = self.streams.pop(sid)
                if p[:1] == b"\x00" and s[0].can_write_eof():
                    s[0].write_eof()
                else:
                    s[0].close()
            elif t == cells.DNS_Q:
                asyncio.create_task(self.dns(sid, bytes(p)))
            elif t == cells.PING:
                self.cell(cells.PONG, 0, bytes(p))
            await self.w.drain()

    def misbehave(self):
        # Cells no exit may send: unknown sids, an unknown type, a DNS_A nobody
        # asked for, an OPEN (the hub's to send), a huge length.
        self.cell(cells.DATA, 999, b"x" * 10)
        self.cell(cells.CLOSE, 998, b"\x01")
        self.cell(cells.CREDIT, 997, b"\x00\x05")
        self.w.write(bytes((200, 0, 0, 1, 0, 0)) + bytes(self.size - H))
        self.w.write(bytes((cells.DATA, 0, 0, 1, 0xFF, 0xFF)) + bytes(self.size - H))
        self.cell(cells.DNS_A, 4242, b"\x00" * 12)
        self.cell(cells.OPEN, 5, b"\x01\xbbx.test")

    async def open(self, sid, port, name):
        ip = self.args.zone.get(name)
        try:
            ur, uw = await asyncio.wait_for(asyncio.open_connection(ip, port), 5)
        except (OSError, asyncio.TimeoutError, TypeError, ValueError):
            self.cell(cells.OPENED, sid, bytes((cells.CONNECT_FAILED,)))
            return
        self.streams[sid] = [uw, self.hub_window, 0]
        self.credit_ev[sid] = asyncio.Event()
        self.cell(cells.OPENED, sid, b"\x00")
        if self.args.bad:
            # A credit violation: more DATA than the hub's window at once.
            for _ in range(self.hub_window + 2):
                self.cell(cells.DATA, sid, b"y")
        pmax = self.size - H
        while True:
            data = await ur.read(pmax)
            s = self.streams.get(sid)
            if s is None:
                break
            if not data:
                self.streams.pop(sid, None)
                self.cell(cells.CLOSE, sid, b"\x00")
                await self.w.drain()
                break
            while s[1] <= 0:
                self.credit_ev[sid].clear()
                await self.credit_ev[sid].wait()
            s[1] -= 1
            self.cell(cells.DATA, sid, data)
            await self.w.drain()
        uw.close()

    async def dns(self, qid, wire):
        # Answered from the zone (A records; anything else: no data).
        from blinds.dns import msg as dnsmsg

        try:
            q = dnsmsg.decode(wire)
        except dnsmsg.DnsError:
            return
        name, qtype, qclass = q.questions[0]
        r = dnsmsg.Message(qid, 0x8180)
        r.questions = [(name, qtype, qclass)]
        ip = self.args.zone.get(name)
        if ip is None:
            r.flags |= 3  # NXDOMAIN
        elif qtype == 1:
            r.answers = [(name, 1, 1, 300, socket.inet_aton(ip))]
        ans = dnsmsg.encode(r)
        pmax = self.size - H
        for i in range(0, len(ans), pmax):
            more = cells.FLAG_MORE if i + pmax < len(ans) else 0
            self.cell(cells.DNS_A, qid, ans[i:i + pmax], more)
        await self.w.drain()


async def serve(args):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(args.cert, args.key)
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(args.hub_cert)

    async def handle(r, w):
        try:
            await Conn(args, r, w).run()
        except (OSError, asyncio.IncompleteReadError, cells.CellError) as e:
            print("fake exit: connection ended: %r" % (e,), flush=True)
        finally:
            w.close()

    ip, port = args.listen.rsplit(":", 1)
    srv = await asyncio.start_server(handle, ip, int(port), ssl=ctx)
    print("fake exit listening on %s" % args.listen, flush=True)
    async with srv:
        await srv.serve_forever()


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--listen", required=True)
    p.add_argument("--cert", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--hub-cert", required=True)
    p.add_argument("--zone", type=json.loads, default={})
    p.add_argument("--window", type=int, default=16)
    p.add_argument("--bad", action="store_true")
    p.add_argument("--mute", action="store_true", help="after HELLO and TIME, send nothing")
    args = p.parse_args(argv)
    args.seen = []
    asyncio.run(serve(args))


if __name__ == "__main__":
    sys.exit(main())
