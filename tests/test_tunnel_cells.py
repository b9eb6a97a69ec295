"""The tunnel's cell codec (docs/tunnel.md): every cell is exactly cell_bytes
long, round-trips, and bad cells raise CellError only; the same on the unix
port (CPython is the oracle)."""

import json

from hypothesis import given
from hypothesis import strategies as st

from blinds.tunnel import cells as c
from mpy import run_mp

sizes = st.integers(c.MIN_CELL, 1024)


@given(sizes, st.integers(0, c.N_TYPES - 1), st.integers(0, 0xFFFF), st.integers(0, 255),
       st.data())
def test_cells_round_trip_at_one_length(size, ctype, sid, flags, data):
    payload = data.draw(st.binary(max_size=size - c.HEADER))
    buf = bytearray(b"\xff" * size)
    c.pack(buf, ctype, sid, payload, flags)
    assert len(buf) == size
    assert c.unpack(buf) == (ctype, flags, sid, len(payload))
    assert bytes(buf[c.HEADER:c.HEADER + len(payload)]) == payload
    assert not any(buf[c.HEADER + len(payload):])  # padding is zeros


@given(st.binary(min_size=6, max_size=600))
def test_any_bytes_unpack_or_cellerror(cell):
    try:
        ctype, flags, sid, n = c.unpack(cell)
    except c.CellError:
        return
    assert ctype < c.N_TYPES and n <= len(cell) - c.HEADER


@given(sizes)
def test_hello_announces_the_size(size):
    buf = bytearray(size)
    c.hello(buf, 0)
    assert c.hello_size(buf[:c.HEADER]) == size


@given(st.integers(1, 65535), st.text("abcdefghijklmnopqrstuvwxyz0123456789.-", min_size=1,
                                      max_size=200))
def test_open_round_trip(port, name):
    buf = bytearray(512)
    c.pack(buf, c.OPEN, 7, c.open_payload(port, name))
    _, _, sid, n = c.unpack(buf)
    assert sid == 7 and c.parse_open(buf, n) == (port, name)


def test_bad_hellos_and_opens():
    buf = bytearray(512)
    c.pack(buf, c.DATA, 1, b"x")
    for head in (bytes(buf[:6]), b"\x01\x00\x00\x10\x00\x02", b"\x01\x00\x20\x00\x00\x02"):
        try:
            c.hello_size(head)
        except c.CellError:
            continue
        raise AssertionError(head)
    c.pack(buf, c.OPEN, 1, b"\x00\x00x")
    try:
        c.parse_open(buf, 3)
    except c.CellError:
        pass
    else:
        raise AssertionError("port 0")


MP = r"""
import sys, json, binascii
from blinds.tunnel import cells as c
for line in sys.stdin:
    cell = binascii.unhexlify(line.strip())
    try:
        print(json.dumps(list(c.unpack(cell))))
    except c.CellError as e:
        print(json.dumps("E"))
"""


def test_unix_port_agrees():
    import random

    rng = random.Random(3)
    cases = []
    for _ in range(300):
        size = rng.choice([64, 128, 512])
        buf = bytearray(size)
        c.pack(buf, rng.randrange(c.N_TYPES), rng.randrange(65536),
               bytes(rng.randrange(256) for _ in range(rng.randrange(size - 5))))
        if rng.random() < 0.3:
            buf[rng.randrange(6)] = rng.randrange(256)
        cases.append(bytes(buf))
    exp = []
    for cell in cases:
        try:
            exp.append(list(c.unpack(cell)))
        except c.CellError:
            exp.append("E")
    res = run_mp(MP, heap="64k", stdin="".join(x.hex() + "\n" for x in cases).encode())
    assert res.returncode == 0, res.stderr.decode()
    assert [json.loads(x) for x in res.stdout.decode().splitlines()] == exp
