# What a name is: the answer cache, the encrypted resolvers, and the names each
# device last resolved (its bindings). The DNS server and the relay both ask
# here; a lookup made for either fills the cache for both.
from blinds.compat import const, ticks_ms
from blinds.dns import msg as dnsmsg

_NEG_TTL_S = const(60)  # cap for negative answers without an SOA
_BOUND_MAX = const(8)  # names kept per device for streams that carry no name
_T_A = const(1)


class Names:
    def __init__(self, cache, resolver, n_slots):
        self.cache = cache
        self.resolver = resolver
        self.bound = [None] * n_slots  # device slot -> names, most recent last
        self.lookups = 0

    # -- bindings: the names a device resolved, for streams without SNI/Host --
    def bind(self, idx, name):
        names = self.bound[idx]
        if names is None:
            names = self.bound[idx] = []
        for i in range(len(names)):
            if names[i] == name:
                # Keep the stored string (not this query's): long-lived
                # objects made per query would fragment the heap.
                names.append(names.pop(i))
                return
        names.append(name)
        if len(names) > _BOUND_MAX:
            names.pop(0)

    def bindings(self, idx):
        return self.bound[idx] or ()

    def forget(self, idx):
        self.bound[idx] = None

    # -- answers -------------------------------------------------------------------
    def cached(self, name, now_ms):
        """(rcode, packed A addresses, ttl left) from the cache, or None."""
        return self.cache.get(name, now_ms)

    async def resolve(self, qname, qtype):
        """Ask the upstreams. -> (rcode, data, ttl) or None when none answered;
        data: packed A addresses (A, cached) or (type, ttl, rdata) answers."""
        self.lookups += 1
        r = await self.resolver.query(qname, qtype)
        if r is None:
            return None
        rc = r.flags & 15
        if rc != dnsmsg.NOERROR and rc != dnsmsg.NXDOMAIN:
            return None
        ttls = [a[3] for a in r.answers]
        ttl = min(ttls) if ttls and rc == dnsmsg.NOERROR else _neg_ttl(r)
        if qtype == _T_A:
            # CNAME chains collapse: the device only ever sees the hub's address.
            data = b"".join([a[4] for a in r.answers if a[1] == _T_A and len(a[4]) == 4])
            self.cache.put(qname, rc, data, ttl, ticks_ms())
        else:
            data = [(a[1], a[3], a[4]) for a in r.answers if a[0] == qname and a[1] == qtype]
        return rc, data, max(ttl, 0)

    async def addresses(self, name):
        """The name's upstream IPv4 addresses (dotted), from the cache or the
        resolvers (the answer is cached); [] when it has none."""
        hit = self.cache.get(name, ticks_ms())
        if hit is None:
            hit = await self.resolve(name, _T_A)
        if hit is None or hit[0] != dnsmsg.NOERROR:
            return []
        a = hit[1]
        return ["%d.%d.%d.%d" % (a[i], a[i + 1], a[i + 2], a[i + 3]) for i in range(0, len(a), 4)]

    def status(self):
        c = self.cache
        return {"cache_size": len(c), "cache_max": c.size, "hits": c.hits, "misses": c.misses,
                "evictions": c.evictions, "lookups": self.lookups}


def _neg_ttl(r):
    for rr in r.authority:
        if rr[1] == 6 and len(rr[4]) >= 4:  # SOA: its MINIMUM field ends the rdata
            rd = rr[4]
            return min(rr[3], (rd[-4] << 24) | (rd[-3] << 16) | (rd[-2] << 8) | rd[-1], _NEG_TTL_S)
    return _NEG_TTL_S
