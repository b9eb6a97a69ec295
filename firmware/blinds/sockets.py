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
