"""Reading captures: pcap and pcapng, Ethernet or Linux cooked (SLL) frames."""

import os

from .errors import UsageError


def frames(path):
    """Yield (ts, frame_len, eth) for each frame; ``eth`` a dpkt Ethernet (or SLL) object."""
    import dpkt

    if not os.path.exists(path):
        raise UsageError("no such capture: %s" % path)
    with open(path, "rb") as f:
        magic = f.read(4)
        f.seek(0)
        try:
            reader = dpkt.pcapng.Reader(f) if magic == b"\x0a\x0d\x0d\x0a" else dpkt.pcap.Reader(f)
        except (ValueError, dpkt.dpkt.Error) as e:
            raise UsageError("%s is not a pcap or pcapng capture: %s" % (path, e))
        dlt = reader.datalink()
        if dlt == dpkt.pcap.DLT_EN10MB:
            decode = dpkt.ethernet.Ethernet
        elif dlt == dpkt.pcap.DLT_LINUX_SLL:
            decode = dpkt.sll.SLL
        else:
            raise UsageError("%s: link type %d is not supported (Ethernet or Linux SLL)" % (path, dlt))
        for ts, buf in reader:
            yield float(ts), len(buf), decode(buf)


def ip_of(frame):
    """The IPv4 or IPv6 packet inside a decoded frame, or None."""
    import dpkt

    data = frame.data
    if isinstance(data, (dpkt.ip.IP, dpkt.ip6.IP6)):
        return data
    return None
