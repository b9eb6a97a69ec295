# Topic ACLs of the local broker: what a client may publish to and subscribe
# to, as lists of topic filters from the config. Fail closed: an empty list
# allows nothing.
from blinds.local.mqtt_codec import matches


def covers(pattern, flt):
    # Is every topic that flt matches also matched by pattern? (A SUBSCRIBE
    # to flt is allowed only then: "stat/#" covers "stat/plug/+", not "#".)
    if flt[:1] == "$" and pattern[:1] in ("+", "#"):
        return False  # a leading wildcard matches no '$' topic
    pl = pattern.split("/")
    fl = flt.split("/")
    n = len(fl)
    for i in range(len(pl)):
        p = pl[i]
        if p == "#":
            return True
        if i >= n:
            return False
        f = fl[i]
        if f == "#":
            return False
        if p == "+":
            continue
        if f == "+" or f != p:
            return False
    return len(pl) == n


class Acl:
    __slots__ = ("pub", "sub")

    def __init__(self, pub, sub):
        self.pub = tuple(pub)
        self.sub = tuple(sub)

    def may_publish(self, topic):
        for p in self.pub:
            if matches(p, topic):
                return True
        return False

    def may_subscribe(self, flt):
        for p in self.sub:
            if covers(p, flt):
                return True
        return False
