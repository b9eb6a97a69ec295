# SNTP on the AP address: devices that need the time keep working when their
# vendor's time servers are blocked. The time is the hub's (set from the
# uplink); an unsynchronised hub says so (stratum 16) rather than guess.
from blinds.time import sntp
from blinds.net import sockets


class NtpServer:
    def __init__(self, board, ap_ip):
        self.board = board
        self.ap_ip = ap_ip
        self.out = bytearray(48)
        self.served = 0
        self.dropped = 0

    def socket(self):
        return sockets.udp_server(self.ap_ip, 123)

    async def serve(self, sock):
        while True:
            await self.board.wait_readable(sock)
            try:
                q, addr = sock.recvfrom(64)
            except OSError:
                continue
            t = self.board.time_s()
            s = int(t)
            n = sntp.reply(q, len(q), s, self.out, synced=self.board.synced(), now_us=int((t - s) * 1000000))
            if not n:
                self.dropped += 1
                continue
            try:
                sock.sendto(self.out, addr)
                self.served += 1
            except OSError:
                self.dropped += 1
