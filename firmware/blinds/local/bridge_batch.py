# A batch: every message of a batched topic pending at the batch period, in
# one payload of a fixed size, whatever the devices did:
#   "BLB1", count 2, then per message: topic length 2, topic, payload
#   length 2, payload; zeros up to the size.
# What does not fit waits for the next batch (in queue order).
import struct

MAGIC = b"BLB1"


def pack(entries, out):
    """Entries [seq, kind, qos, delay_ms, topic, payload, ...] into out (a
    bytearray of the batch's size, reused) -> how many of the first entries
    it carries."""
    size = len(out)
    for i in range(size):
        out[i] = 0
    off = 6
    n = 0
    for e in entries:
        t = e[4].encode()
        need = 4 + len(t) + len(e[5])
        if off + need > size:
            break
        struct.pack_into(">H", out, off, len(t))
        out[off + 2:off + 2 + len(t)] = t
        off += 2 + len(t)
        struct.pack_into(">H", out, off, len(e[5]))
        out[off + 2:off + 2 + len(e[5])] = e[5]
        off += 2 + len(e[5])
        n += 1
    out[0:4] = MAGIC
    struct.pack_into(">H", out, 4, n)
    return n


def unpack(payload):
    """A batch -> [(topic, payload)]; ValueError if it is not one."""
    if len(payload) < 6 or bytes(payload[:4]) != MAGIC:
        raise ValueError("not a batch")
    n = struct.unpack(">H", payload[4:6])[0]
    off = 6
    msgs = []
    for _ in range(n):
        tl = _u16(payload, off)
        t = str(bytes(payload[off + 2:off + 2 + tl]), "utf-8")
        off += 2 + tl
        pl = _u16(payload, off)
        if off + 2 + pl > len(payload):
            raise ValueError("truncated batch")
        msgs.append((t, bytes(payload[off + 2:off + 2 + pl])))
        off += 2 + pl
    return msgs


def _u16(b, off):
    if off + 2 > len(b):
        raise ValueError("truncated batch")
    return b[off] << 8 | b[off + 1]
