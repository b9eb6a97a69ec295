"""An MQTT load for ``broker_msgs_per_s``: N publishers and N subscribers.

    python -m blinds_host.bench.mqttload --host IP --port P [--user U --password W]
           [--pairs 8] [--seconds 5] [--size 100] [--window 8]

Subscriber i subscribes to ``bench/i`` (QoS 0); publisher i publishes QoS 1
messages of ``size`` bytes to ``bench/i`` with ``window`` unacknowledged at
most. Prints one JSON line: messages the subscribers received per second
over the measured window (after a one-second warm-up), and the counts.
One asyncio process, raw sockets, the firmware's own MQTT codec.
"""

import argparse
import asyncio
import json
import time

from blinds.local import mqtt_codec as mq


async def _read(reader):
    """One packet (as mqtt_codec.decode gives it)."""
    first = (await reader.readexactly(1))[0]
    n = 0
    shift = 0
    while True:
        b = (await reader.readexactly(1))[0]
        n |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            break
    body = await reader.readexactly(n) if n else b""
    return mq.decode(first, body)


async def _connect(args, cid):
    reader, writer = await asyncio.open_connection(args.host, args.port)
    pw = args.password.encode() if args.password else None
    writer.write(mq.encode((mq.CONNECT, cid, 1, 60, None, args.user, pw)))
    p = await _read(reader)
    if p[0] != mq.CONNACK or p[2] != 0:
        raise SystemExit("CONNACK %r for %s" % (p, cid))
    return reader, writer


class Load:
    def __init__(self, args):
        self.args = args
        self.received = 0
        self.measuring = False
        self.stop = False

    async def subscriber(self, i, ready):
        reader, writer = await _connect(self.args, "bsub%d" % i)
        writer.write(mq.encode((mq.SUBSCRIBE, 1, [("bench/%d" % i, 0)])))
        while True:
            p = await _read(reader)
            if p[0] == mq.SUBACK:
                ready.set_result(True)
            elif p[0] == mq.PUBLISH and self.measuring:
                self.received += 1

    async def publisher(self, i):
        reader, writer = await _connect(self.args, "bpub%d" % i)
        payload = bytes(self.args.size)
        credit = asyncio.Semaphore(self.args.window)
        topic = "bench/%d" % i

        async def acks():
            while True:
                p = await _read(reader)
                if p[0] == mq.PUBACK:
                    credit.release()

        task = asyncio.ensure_future(acks())
        pid = 0
        while not self.stop:
            await credit.acquire()
            pid = pid % 65535 + 1
            writer.write(mq.encode((mq.PUBLISH, topic, payload, 1, 0, 0, pid)))
            await writer.drain()
        task.cancel()

    async def run(self):
        a = self.args
        loop = asyncio.get_running_loop()
        readies = [loop.create_future() for _ in range(a.pairs)]
        subs = [asyncio.ensure_future(self.subscriber(i, readies[i])) for i in range(a.pairs)]
        await asyncio.wait_for(asyncio.gather(*readies), 30)
        pubs = [asyncio.ensure_future(self.publisher(i)) for i in range(a.pairs)]
        await asyncio.sleep(1.0)  # warm-up
        self.measuring = True
        t0 = time.perf_counter()
        await asyncio.sleep(a.seconds)
        self.measuring = False
        dt = time.perf_counter() - t0
        self.stop = True
        for t in subs + pubs:
            t.cancel()
        return {"msgs_per_s": round(self.received / dt, 1), "received": self.received,
                "seconds": round(dt, 3), "pairs": a.pairs, "size": a.size, "window": a.window}


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m blinds_host.bench.mqttload")
    ap.add_argument("--host", required=True)
    ap.add_argument("--port", type=int, default=1883)
    ap.add_argument("--user")
    ap.add_argument("--password")
    ap.add_argument("--pairs", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--size", type=int, default=100)
    ap.add_argument("--window", type=int, default=8)
    args = ap.parse_args(argv)
    print(json.dumps(asyncio.run(Load(args).run())), flush=True)


if __name__ == "__main__":
    main()
