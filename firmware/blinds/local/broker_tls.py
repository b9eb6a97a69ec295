# MQTT over TLS on 8883 for the local broker, with the hub's certificate
# (mqtt.tls in the config). The relay has already read the ClientHello's
# first bytes to sniff it; Prefixed hands them to mbedTLS before the socket's.
#
# mbedTLS wants DER here (a PEM key is refused by the port's parser): PEM
# files are converted once, at start.
import io
import ssl

from blinds.compat import const
from blinds.net.pem import der

TLS_PORT = const(8883)
_STREAM_CLOSE = const(4)  # MP_STREAM_CLOSE


class Prefixed(io.IOBase):
    # A stream for mbedTLS: the bytes already read, then the socket's.
    def __init__(self, sock, pre):
        self.sock = sock
        self.pre = pre

    def readinto(self, buf):
        if self.pre:
            n = min(len(buf), len(self.pre))
            buf[:n] = self.pre[:n]
            self.pre = self.pre[n:]
            return n
        return self.sock.readinto(buf)

    def write(self, buf):
        return self.sock.write(buf)

    def ioctl(self, req, arg):
        if req == _STREAM_CLOSE:
            self.sock.close()
        return 0

    def setblocking(self, flag):
        self.sock.setblocking(flag)

    def close(self):
        self.sock.close()


def context(board, tcfg):
    # The server context; a missing or broken file stops the hub at start.
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(der(board.read_file(tcfg["cert_file"])),
                        der(board.read_file(tcfg["key_file"])))
    return ctx


def wrap(ctx, sock, first):
    """The TLS stream of a device's connection whose first bytes were read.
    The handshake runs in the first reads (non-blocking)."""
    return ctx.wrap_socket(Prefixed(sock, first), server_side=True,
                           do_handshake_on_connect=False)


def is_tls(first):
    # A TLS record of type handshake starts with 0x16; MQTT's CONNECT with 0x10.
    return bool(first) and first[0] == 0x16
