# Server sockets on the AP address, non-blocking, for the event loop.
import socket


def udp_server(ip, port):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(socket.getaddrinfo(ip, port)[0][-1])
    s.setblocking(False)
    return s


def tcp_listener(ip, port, backlog):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(socket.getaddrinfo(ip, port)[0][-1])
    s.listen(backlog)
    s.setblocking(False)
    return s


_IN_PROGRESS = (115, 119)  # EINPROGRESS on Linux, on lwIP


def tcp_connect(ip, port):
    # A non-blocking TCP socket with its connect under way; wait until it is
    # writable. (A refused connect also shows as writable: MicroPython has no
    # getsockopt for SO_ERROR, so the first read or write tells.)
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setblocking(False)
    try:
        s.connect(socket.getaddrinfo(ip, port)[0][-1])
    except OSError as e:
        if e.args[0] not in _IN_PROGRESS:
            s.close()
            raise
    return s


def close_all(*socks):
    # Close each socket given (None is skipped); a close that fails (already
    # reset, TLS shutdown on a dead peer) is of no consequence to the caller.
    for s in socks:
        if s is not None:
            try:
                s.close()
            except OSError:
                pass
