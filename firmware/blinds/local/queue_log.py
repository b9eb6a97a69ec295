# The uplink bridge's queue: messages waiting to leave for the cloud broker,
# kept in flash as an append-only log so that a power cut or a kill -9 loses
# nothing that was committed.
#
# The file is a sequence of records, each [type 1][length 2][crc32 4][body]
# (big-endian; the CRC covers type, length and body):
#   ENTRY  seq 4, kind 1, qos 1, delay_ms 4, topic length 2, topic, payload
#   DONE   seq 4 ...   entries sent (or dropped): they do not come back
#   COMMIT seq 4       everything since the previous COMMIT holds
#   PAD    zeros       fills a write up to a whole block (before its COMMIT)
# Records after the last good COMMIT are a torn or damaged write: reading
# keeps the valid prefix and reports how many bytes it left out. Each flush
# appends whole blocks (flash is written in pages; littlefs copies a
# partial block). When the log grows past a bound, the live entries are
# written to a new file which replaces the old one (a rename: atomic).
import os
import struct

from blinds.compat import const

try:
    from binascii import crc32
except ImportError:  # CPython
    from zlib import crc32

ENTRY = const(0x45)
DONE = const(0x44)
COMMIT = const(0x43)
PAD = const(0x50)
HDR = const(7)
_EHDR = const(12)  # an ENTRY's body before the topic
_COST = const(32)  # what an entry costs in RAM beyond its topic and payload
_MAX_DONE = const(64)  # seqs per DONE record

IMMEDIATE = const(0)
DELAYED = const(1)
BATCHED = const(2)
KINDS = ("immediate", "delayed", "batched")


class QueueError(Exception):
    pass


def record(rtype, body):
    # One record, its header and CRC in front of body.
    h = struct.pack(">BH", rtype, len(body))
    return h + struct.pack(">I", crc32(body, crc32(h)) & 0xFFFFFFFF) + body


def entry_body(seq, kind, qos, delay_ms, topic, payload):
    t = topic.encode() if isinstance(topic, str) else topic
    return struct.pack(">IBBIH", seq, kind, qos, delay_ms, len(t)) + t + payload


def parse(chunks):
    """Read a log from an iterable of byte strings (its whole text, in
    pieces). -> (entries {seq: [seq, kind, qos, delay_ms, topic, payload]}
    in file order, last seq, valid bytes, bad bytes, problem or None)."""
    live = {}
    pend = []  # records since the last COMMIT: (type, body)
    buf = b""
    pos = 0  # of buf[0] in the file
    valid = 0
    last = 0
    problem = None
    it = iter(chunks)
    more = True
    while True:
        while more and len(buf) < HDR:
            buf, more = _more(buf, it)
        if len(buf) < HDR:
            if buf:
                problem = "truncated record at %d" % pos
            break
        t, n, c = struct.unpack(">BHI", buf[:HDR])
        if t not in (ENTRY, DONE, COMMIT, PAD):
            problem = "unknown record type %d at %d" % (t, pos)
            break
        while more and len(buf) < HDR + n:
            buf, more = _more(buf, it)
        if len(buf) < HDR + n:
            problem = "truncated record at %d" % pos
            break
        body = buf[HDR:HDR + n]
        if crc32(body, crc32(buf[:3])) & 0xFFFFFFFF != c:
            problem = "bad CRC at %d" % pos
            break
        if (t == ENTRY and (n < _EHDR or n < _EHDR + struct.unpack(">H", body[10:12])[0])) \
                or ((t == DONE or t == COMMIT) and (n < 4 or n % 4)):
            problem = "malformed record at %d" % pos
            break
        buf = buf[HDR + n:]
        pos += HDR + n
        if t == COMMIT:
            for rt, b in pend:
                if rt == ENTRY:
                    e = _entry(b)
                    live[e[0]] = e
                    last = max(last, e[0])
                else:
                    for i in range(0, len(b), 4):
                        s = struct.unpack(">I", b[i:i + 4])[0]
                        live.pop(s, None)
                        last = max(last, s)
            last = max(last, struct.unpack(">I", body[:4])[0])
            pend = []
            valid = pos
        elif t != PAD:
            pend.append((t, body))
    total = pos + len(buf)
    for b in it:
        total += len(b)
    if problem is None and total > valid:
        problem = "uncommitted records at %d" % valid
    return live, last, valid, total - valid, problem


def _more(buf, it):
    try:
        return buf + next(it), True
    except StopIteration:
        return buf, False


def _entry(b):
    seq, kind, qos, delay_ms, tl = struct.unpack(">IBBIH", b[:_EHDR])
    return [seq, kind, qos, delay_ms, str(b[_EHDR:_EHDR + tl], "utf-8"), bytes(b[_EHDR + tl:])]


def _chunks(f, n=512):
    while True:
        d = f.read(n)
        if not d:
            return
        yield d


class Queue:
    """Entries [seq, kind, qos, delay_ms, topic, payload, due_ms] in seq
    order, at most max_bytes of them (topics, payloads and a fixed cost
    each). add() and done() append records to a pending buffer; flush()
    writes it with a COMMIT, padded to whole blocks."""

    def __init__(self, path, max_bytes, block, compact_bytes=0):
        self.path = path
        self.max_bytes = max_bytes
        self.block = block
        self.compact_bytes = compact_bytes or max(4 * max_bytes, 8 * block)
        self.entries = []
        self.size = 0
        self.seq = 0
        self.pend = []  # records not written yet
        self.file_bytes = 0
        self.c = {"added": 0, "sent": 0, "dropped": 0, "refused": 0, "flushes": 0,
                  "written": 0, "compactions": 0, "recovered": 0, "corrupt_bytes": 0}
        self.problem = None

    # -- opening ------------------------------------------------------------------
    def load(self):
        """Read the log (keeping its valid prefix) and write it afresh."""
        try:
            with open(self.path, "rb") as f:
                live, last, _, bad, problem = parse(_chunks(f))
        except OSError:
            live, last, bad, problem = {}, 0, 0, None
        self.seq = last
        self.entries = []
        self.size = 0
        for s in sorted(live):
            e = live[s]
            e.append(0)  # due: set by the bridge
            self.entries.append(e)
            self.size += self.cost(e)
        self.c["recovered"] = len(self.entries)
        self.c["corrupt_bytes"] = bad
        self.problem = problem
        self.compact()
        return problem

    @staticmethod
    def cost(e):
        return len(e[4]) + len(e[5]) + _COST

    # -- changes --------------------------------------------------------------------
    def add(self, kind, qos, topic, payload, delay_ms=0):
        """Queue a message; -> its entry, or None when there is no room. Room
        is made by dropping the oldest delayed/batched entries (counted),
        never an immediate one."""
        e = [0, kind, qos, delay_ms, topic, payload, 0]
        n = self.cost(e)
        if n > self.max_bytes:
            self.c["refused"] += 1
            return None
        if self.size + n > self.max_bytes:
            gone = []
            room = self.size + n - self.max_bytes
            freed = 0
            for o in self.entries:
                if freed >= room:
                    break
                if o[1] != IMMEDIATE:
                    gone.append(o)
                    freed += self.cost(o)
            if freed < room:
                # Only immediate entries left to drop: the newcomer goes.
                self.c["refused"] += 1
                return None
            self.c["dropped"] += len(gone)
            self.done(gone, False)
        self.seq += 1
        e[0] = self.seq
        self.entries.append(e)
        self.size += n
        self.c["added"] += 1
        self.pend.append(record(ENTRY, entry_body(e[0], kind, qos, delay_ms, topic, payload)))
        return e

    def done(self, gone, sent=True):
        """Entries sent (or dropped): out of the queue, a DONE record for them."""
        ids = set()
        for e in gone:
            ids.add(e[0])
        if not ids:
            return
        keep = []
        for e in self.entries:
            if e[0] in ids:
                self.size -= self.cost(e)
            else:
                keep.append(e)
        self.entries = keep
        if sent:
            self.c["sent"] += len(ids)
        ids = sorted(ids)
        for i in range(0, len(ids), _MAX_DONE):
            part = ids[i:i + _MAX_DONE]
            self.pend.append(record(DONE, struct.pack(">%dI" % len(part), *part)))

    def dirty(self):
        return bool(self.pend)

    # -- writing --------------------------------------------------------------------
    def _tail(self, n):
        # PAD up to where the COMMIT ends a whole block, then the COMMIT: a
        # write is committed exactly when its last block is.
        out = record(COMMIT, struct.pack(">I", self.seq))
        if self.block > 1:
            gap = -(n + len(out)) % self.block
            if gap:
                if gap < HDR:
                    gap += self.block
                out = record(PAD, bytes(gap - HDR)) + out
        return out

    def flush(self):
        """Append what is pending, committed; compact when the log is large."""
        if not self.pend:
            return
        if self.file_bytes >= self.compact_bytes:
            self.compact()  # clears pend once the new file is in place
            return
        n = 0
        for r in self.pend:
            n += len(r)
        tail = self._tail(self.file_bytes + n)
        try:
            with open(self.path, "ab") as f:
                for r in self.pend:
                    f.write(r)
                f.write(tail)
        except OSError:
            # Part of it may be in the file, uncommitted: appending after it
            # would hide later commits from a reader. The next flush writes
            # the file afresh instead.
            self.file_bytes = self.compact_bytes
            raise
        self.pend = []
        self.file_bytes += n + len(tail)
        self.c["flushes"] += 1
        self.c["written"] += n + len(tail)

    def compact(self):
        # The live entries into a new file, then a rename over the old one.
        tmp = self.path + ".tmp"
        n = 0
        with open(tmp, "wb") as f:
            for e in self.entries:
                r = record(ENTRY, entry_body(e[0], e[1], e[2], e[3], e[4], e[5]))
                f.write(r)
                n += len(r)
            tail = self._tail(n)
            f.write(tail)
            n += len(tail)
        os.rename(tmp, self.path)
        self.pend = []
        self.file_bytes = n
        self.c["compactions"] += 1
        self.c["written"] += n

    def status(self):
        d = dict(self.c)
        d["entries"] = len(self.entries)
        d["bytes"] = self.size
        d["file_bytes"] = self.file_bytes
        d["problem"] = self.problem
        return d
