# Encrypted DNS upstreams: DNS-over-TLS (RFC 7858, blinds.dns.dot) and
# DNS-over-HTTPS (RFC 8484, blinds.dns.doh), with failover. Plaintext DNS
# never leaves the hub: there is no code path that sends a DNS message on
# anything but a verified TLS connection (blinds.dns.tlsconn).
from blinds.compat import const, ticks_ms
from blinds.dns import msg as dnsmsg
from blinds.dns.msg import make_query  # noqa: F401 - its users import it from here too
from blinds.dns.doh import DohUpstream
from blinds.dns.dot import DotUpstream
from blinds.dns.tlsconn import UpstreamError, pem_to_der, tls_context  # noqa: F401

_T_NS = const(2)


def make_upstreams(dns_cfg, board):
    # The board gives the pinned CA files (read_file) and the socket waits.
    ups = []
    timeout_ms = dns_cfg.get("timeout_ms", 2000)
    for u in dns_cfg["upstreams"]:
        cadata = pem_to_der(board.read_file(u["ca_file"]))
        if u["type"] == "dot":
            ups.append(DotUpstream(u["ip"], u.get("port", 853), u["name"], cadata, timeout_ms, board,
                                   probe=_PROBE))
        else:
            host, port, path = split_url(u["url"])
            ups.append(DohUpstream(u["ip"], port, host, path, cadata, timeout_ms, board))
    return ups


def split_url(url):
    # "https://host[:port]/path" -> (host, port, path)
    rest = url[8:]
    i = rest.find("/")
    hostport, path = (rest, "/") if i < 0 else (rest[:i], rest[i:])
    host, _, port = hostport.partition(":")
    return host.lower(), int(port) if port else 443, path


class Resolver:
    def __init__(self, upstreams):
        self.upstreams = upstreams
        self.failovers = 0
        self.failed = 0

    async def query(self, name, qtype):
        # -> decoded dnsmsg.Message, or None when no upstream answered.
        wire = make_query(name, qtype)
        now = ticks_ms()
        tried = 0
        for up in self.upstreams:
            if not up.available(now):
                continue
            if tried:
                self.failovers += 1
            tried += 1
            try:
                r = dnsmsg.decode(await up.query(wire))
            except UpstreamError:
                continue
            except dnsmsg.DnsError:
                up._failed("malformed reply")
                continue
            if not r.questions or r.questions[0][0] != name or r.questions[0][1] != qtype:
                up._failed("reply for another question")
                continue
            return r
        self.failed += 1
        return None

    async def warm(self):
        """Open the first upstream's connection now, before the first query."""
        if self.upstreams:
            start = getattr(self.upstreams[0], "start", None)
            if start is not None:
                start()

    def status(self):
        return [u.status() for u in self.upstreams]


# What readies a reopened DoT connection: the root's name servers, which every
# resolver holds; the answer is dropped.
_PROBE = make_query("", _T_NS)
