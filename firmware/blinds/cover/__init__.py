# The WiFi cover (docs/cover.md): the hub makes each device's own radio send
# frames, by echo requests sized and timed to a floor rate plus the decoy
# schedule, so that a WiFi eavesdropper's per-MAC view tells the same story as
# the tunnel's. echo: the packets; sched: who sends how much when (no I/O);
# wifi: the service that owns the socket.
