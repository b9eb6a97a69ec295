# A bounded cache of upstream A answers that honours TTLs.
#
# The hub answers every allowed A query with its own address, so all it keeps
# of an upstream answer is the rcode, the TTL and the addresses (4 bytes each,
# packed in one bytes object: the stream relay connects to them). Keys are the
# lower-cased names. When full, the entry closest to expiry is evicted (a scan,
# but only when a miss inserts). ~150 bytes an entry on a 64-bit host.
from blinds.compat import ticks_diff


def presized(n):
    # A dict whose table already holds n entries: growing it later would need
    # one large block, which a fragmented heap may not have. (Deleted slots
    # are reused by later inserts.)
    d = {}
    for i in range(n):
        d[i] = None
    for i in range(n):
        del d[i]
    return d


class Cache:
    def __init__(self, size, min_ttl_s=0, max_ttl_s=86400):
        self.size = size
        self.min_ttl_s = min_ttl_s
        self.max_ttl_s = max_ttl_s
        self.d = presized(size)  # name -> (inserted_ms, ttl_s, rcode, addrs)
        self.hits = 0
        self.misses = 0
        self.evictions = 0

    def get(self, name, now_ms):
        # -> (rcode, addrs, remaining_ttl_s) or None
        e = self.d.get(name)
        if e is None:
            self.misses += 1
            return None
        left = e[1] - ticks_diff(now_ms, e[0]) // 1000
        if left <= 0:
            del self.d[name]
            self.misses += 1
            return None
        self.hits += 1
        return e[2], e[3], left

    def put(self, name, rcode, addrs, ttl_s, now_ms):
        ttl_s = max(self.min_ttl_s, min(ttl_s, self.max_ttl_s))
        if ttl_s <= 0:
            return
        d = self.d
        if name not in d and len(d) >= self.size:
            self._evict(now_ms)
        d[name] = (now_ms, ttl_s, rcode, addrs)

    def _evict(self, now_ms):
        worst = None
        worst_left = 0
        for k, e in self.d.items():
            left = e[1] - ticks_diff(now_ms, e[0]) // 1000
            if worst is None or left < worst_left:
                worst, worst_left = k, left
        del self.d[worst]
        self.evictions += 1

    def __len__(self):
        return len(self.d)
