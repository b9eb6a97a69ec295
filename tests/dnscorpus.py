"""Bad DNS input for the responder: a seeded corpus shared by the CPython,
MicroPython and over-the-network tests."""

import random
import struct


def name_wire(name):
    out = b""
    for label in name.split("."):
        out += bytes([len(label)]) + label.encode()
    return out + b"\0"


def query(name="api.vendor.test", qtype=1, qid=0x1234, flags=0x0100, qd=1, edns=False):
    msg = struct.pack("!HHHHHH", qid, flags, qd, 0, 0, 1 if edns else 0)
    msg += name_wire(name) + struct.pack("!HH", qtype, 1)
    if edns:
        msg += b"\0" + struct.pack("!HHIH", 41, 1232, 0, 0)
    return msg


def corpus(seed=1, n_random=300):
    """[bytes]: malformed and borderline queries, deterministic for a seed."""
    rnd = random.Random(seed)
    good = [query(), query("host1.zone.test", edns=True), query("x.test", qtype=28)]
    out = []
    hdr = struct.pack("!HHHHHH", 7, 0x0100, 1, 0, 0, 0)
    out += [b"", b"\0", b"\0" * 11, b"\0" * 12, hdr]
    out += [good[0][:i] for i in range(len(good[0]))]  # every truncation
    out += [hdr + b"\xc0\x0c" + b"\0\1\0\1"]  # pointer to itself
    out += [hdr + b"\x01a\xc0\x0e" + b"\0\1\0\1"]  # pointer loop via the next label
    out += [hdr + b"\xc0\x20" + b"\0\1\0\1"]  # forward pointer past the end
    out += [hdr + bytes([64]) + b"a" * 64 + b"\0\0\1\0\1"]  # label over 63
    long_name = ".".join(["a" * 63] * 5)  # over 255 octets on the wire
    out += [hdr + name_wire(long_name) + b"\0\1\0\1"]
    out += [hdr + b"\x40a\0\0\1\0\1", hdr + b"\x80a\0\0\1\0\1"]  # reserved label types
    out += [query(qd=0)[:12], query(qd=2), query(flags=0x8100), query(flags=0x2900)]  # qd 0/2, QR, opcode 5
    out += [query("bad\x00label.test"), query("dot.in.label".replace(".", "\x2e", 0))]
    out += [query(qtype=255), query() + b"trailing"]
    out += [struct.pack("!HHHHHH", 9, 0x0100, 1, 0xFFFF, 0xFFFF, 0xFFFF) + name_wire("a.test") + b"\0\1\0\1"]
    for _ in range(n_random):
        kind = rnd.randrange(3)
        if kind == 0:
            out.append(bytes(rnd.randrange(256) for _ in range(rnd.randrange(0, 80))))
        elif kind == 1:
            m = bytearray(rnd.choice(good))
            for _ in range(rnd.randrange(1, 4)):
                m[rnd.randrange(len(m))] = rnd.randrange(256)
            out.append(bytes(m))
        else:
            m = rnd.choice(good)
            out.append(m[:12] + bytes(rnd.randrange(256) for _ in range(rnd.randrange(0, 40))))
    return out
