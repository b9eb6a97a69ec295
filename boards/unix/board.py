# The unix board: the hub on a Linux host, inside the network namespace it runs
# in. Interfaces are the namespace's own (the AP address must already be on
# one of them), the station table is the kernel's neighbour table, storage is
# a directory and the clock is the host's.
import asyncio
import select
import socket
import sys
import time

from blinds.led import Indicator
from blinds.storage import Storage
from limits import LIMITS

_ARP_REFRESH_MS = 5  # re-read /proc/net/arp at most this often on a miss
_ARP_MAX_AGE_MS = 1000  # and at least this often, so a moved address is seen soon
_POLL_FDS = 128  # sockets the event loop can watch before its poll array moves


class BoardError(Exception):
    pass


class Board(Storage):
    name = "unix"
    default_ap_ip = "192.168.4.1"
    limits = LIMITS
    max_sockets = LIMITS["max_sockets"]

    def __init__(self, config_path, state_dir):
        Storage.__init__(self, config_path, state_dir)
        self.arp = {}  # 4 address bytes -> "aa:bb:..."
        self.arp_read_ms = None
        self.time_syncs = 0  # clock sets asked for (SNTP client, tunnel TIME cells)
        self.time_set_ms = None  # the last time given
        # /proc/net/snmp is read into this (udp_dropped): made now, while the
        # heap is empty, as a crowded heap may later lack a block this size.
        self._snmp = bytearray(2048)
        # No LED on a host: the state machine alone, so the status says what
        # an ESP32's LED would.
        self.indicator = Indicator()

    # -- network -----------------------------------------------------------
    async def start_network(self, cfg):
        # Nothing to bring up here: the namespace's interfaces exist. Check that
        # the AP address is ours, so a misconfigured hub says so at once.
        ip = cfg["ap"]["ip"]
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            s.bind(socket.getaddrinfo(ip, 0)[0][-1])
        except OSError as e:
            raise BoardError("AP address %s is not on any interface here (%s)" % (ip, e))
        finally:
            s.close()

    def prepare_event_loop(self, n_fds=_POLL_FDS):
        # Work around a unix-port bug (extmod/modselect.c, POSIX optimisation):
        # when the poller's pollfd array has to move to grow, every registered
        # object's pollfd pointer is rebased, including those of objects that
        # have no fd (TLS sockets), which then point at garbage: the next poll
        # segfaults. Growing the array once, before any TLS socket is
        # registered, means it never moves again for up to n_fds sockets.
        # (The ESP32 port polls without that optimisation.)
        poller = asyncio.core._io_queue.poller
        socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(n_fds)]
        for s in socks:
            poller.register(s, select.POLLIN)
        for s in reversed(socks):
            poller.unregister(s)
            s.close()

    def peer_ip(self, addr):
        # The unix port returns raw sockaddr_in bytes: the address is at 4..8.
        return bytes(addr[4:8])

    def ip_str(self, key):
        return "%d.%d.%d.%d" % (key[0], key[1], key[2], key[3])

    def station_mac(self, key):
        now = time.ticks_ms()
        mac = self.arp.get(key)
        age = None if self.arp_read_ms is None else time.ticks_diff(now, self.arp_read_ms)
        if age is None or age > _ARP_MAX_AGE_MS or (mac is None and age > _ARP_REFRESH_MS):
            self._read_arp()
            self.arp_read_ms = now
            mac = self.arp.get(key)
        return mac

    def _read_arp(self):
        table = {}
        try:
            with open("/proc/net/arp") as f:
                f.readline()
                for line in f:
                    p = line.split()
                    if len(p) >= 4 and p[2] != "0x0" and p[3] != "00:00:00:00:00:00":
                        table[bytes(int(x) for x in p[0].split("."))] = p[3].lower()
        except OSError:
            return
        self.arp = table

    def own_ips(self):
        # Every address of this namespace's interfaces (the kernel's local
        # routes): the relay never connects to one on a device's behalf.
        out = []
        last = None
        with open("/proc/net/fib_trie") as f:
            for line in f:
                s = line.strip()
                if s.startswith("|--") or s.startswith("+--"):
                    last = s[3:].strip().split("/")[0]
                elif "/32 host LOCAL" in s and last and last not in out:
                    out.append(last)
        return out

    def udp_dropped(self):
        # Datagrams to ports nobody listens on (the hub serves only DNS and
        # NTP; it forwards nothing): the kernel's Udp NoPorts counter for this
        # namespace. None where unknown. Read into one buffer kept for it and
        # parsed in place: the status writer asks on every tick, and a split()
        # of the line needs a block of its own that a crowded heap may lack.
        buf = self._snmp
        try:
            with open("/proc/net/snmp", "rb") as f:
                n = f.readinto(buf)
        except OSError:
            return None
        b = buf
        head = b.find(b"\nUdp: ", 0, n)
        vals = b.find(b"\nUdp: ", head + 1, n)
        col = b.find(b" NoPorts", head, vals)
        if head < 0 or vals < 0 or col < 0:
            return None
        k = b.count(b" ", head, col)  # NoPorts is the k-th field
        i = vals + 5
        for _ in range(k):
            i = b.find(b" ", i + 1, n)
        j = b.find(b" ", i + 1, n)
        nl = b.find(b"\n", i + 1, n)
        if 0 <= nl < j or j < 0:
            j = nl
        try:
            return int(bytes(b[i + 1:j]))
        except ValueError:
            return None

    def stations(self):
        self._read_arp()
        return [(mac, self.ip_str(k)) for k, mac in self.arp.items()]

    def wait_readable(self, sock):
        # asyncio has no datagram API; this parks the task until sock is readable.
        yield asyncio.core._io_queue.queue_read(sock)

    def wait_writable(self, sock):
        yield asyncio.core._io_queue.queue_write(sock)

    # -- clock and log -----------------------------------------------------------
    def time_s(self):
        return time.time()

    def synced(self):
        return True  # the host keeps its own time

    def set_time_ms(self, ms):
        # The SNTP client's or the tunnel exit's time: the host keeps its own
        # clock (already synced), so only the request is recorded.
        self.time_syncs += 1
        self.time_set_ms = ms

    def log(self, msg):
        t = time.localtime()
        sys.stdout.write("%02d:%02d:%02d %s\n" % (t[3], t[4], t[5], msg))
