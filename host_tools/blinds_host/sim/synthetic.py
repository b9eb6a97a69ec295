"""Built-in synthetic home: device models that write per-packet rows.

The models produce rows in the same format as the shared recordings (see
:mod:`.recording`), so the schedule, the replay and the attacks treat them as
they treat real traffic. Nothing here comes from ``../shared/data``; the
parameters are round figures of the orders of magnitude published for such
devices, chosen once and not tuned on any result:

- Apthorpe, Reisman, Feamster, "Spying on the Smart Home: Privacy Attacks and
  Defenses on Encrypted IoT Traffic" (arXiv:1708.05044, 2017), Fig. 1 and Sec. 4:
  a switch/plug is near silent with short spikes when switched; a camera sends
  a steady trickle and uploads video on motion or live view at tens to hundreds
  of KB/s; a voice speaker keeps a low idle rate and sends then receives a burst
  of a few seconds per spoken request; a sleep monitor/thermostat-like sensor
  reports periodically.
- Sivanathan et al., "Classifying IoT Devices in Smart Environments Using
  Network Traffic Characteristics" (IEEE TMC 18(8), 2019): IoT devices talk to
  a handful of cloud names, with periodic flows (sleep times of seconds to
  minutes) and small mean packet sizes (about 100-300 bytes) except cameras.
- Trimananda et al., "Packet-Level Signatures for Smart Home Device Events"
  (NDSS 2020): an event (plug on/off) is a short request/response exchange of a
  few packets of a few hundred bytes to the vendor cloud.
- MQTT 3.1.1 (OASIS 2014), sec. 3.12-3.13: PINGREQ/PINGRESP keep-alives of a
  2-byte packet (plus TLS record overhead when over TLS), at the keep-alive
  interval the client picks (tens of seconds in practice).

User events (a plug switched, motion on the camera, a spoken request, a new
set-point) happen at realistic times of day: the run is one *compressed day*
(``day_s`` seconds of recording, by default the whole run), and each event
process is a Poisson process whose rate follows ``DAY_PROFILE``, a household's
hour-of-day activity (none at night, a morning and a larger evening peak, in
the shape of the diurnal usage reported by Apthorpe et al. 2017, Fig. 1, and of
home occupancy), scaled so that the mean rate over the day is the model's. Each
event is recorded (``Recording.events``): the label, its start and end.

Frame sizes are on-the-wire Ethernet lengths: a TLS record of n application
bytes costs about n + 29 (TLS 1.2 AES-GCM) + 66 (Ethernet/IP/TCP with
timestamps). Every model also emits a little local UDP (SSDP/mDNS announcements,
NTP) that the hub does not forward: it shows up as "dropped" in the report.
"""

import numpy as np

from ..lab.events import Event
from .recording import Recording

TLS = 29          # TLS 1.2 AES-GCM record overhead (header 5 + explicit nonce 8 + tag 16)
HDR = 66          # Ethernet 14 + IPv4 20 + TCP 20 + timestamps 12
ACK = 66

# Cloud names (the .test TLD never leaves the simulated home); server addresses
# are synthetic global unicast ones that exist only inside the namespaces.
SERVICES = {
    "plug": [("mqtt.plugco.test", "100.1.0.10", 8883), ("api.plugco.test", "100.1.0.11", 443)],
    "camera": [("stream.camco.test", "100.2.0.10", 443), ("api.camco.test", "100.2.0.11", 443)],
    "speaker": [("avs.voiceco.test", "100.3.0.10", 443), ("metrics.voiceco.test", "100.3.0.11",
                                                          443)],
    "bridge": [("bridge.lightco.test", "100.4.0.10", 443), ("time.lightco.test", "100.4.0.11",
                                                           80)],
    "thermostat": [("home.thermco.test", "100.5.0.10", 443)],
}
MODELS = ("plug", "camera", "speaker", "bridge", "thermostat")
# Who waits for a device: a person (interactive), or nobody soon (sensors, syncs).
DEVICE_CLASS = {"plug": "interactive", "camera": "interactive", "speaker": "interactive",
                "bridge": "delay_tolerant", "thermostat": "delay_tolerant"}

# Relative user activity per hour of the day (0:00-1:00 first); scaled to mean 1.
_HOURLY = (0, 0, 0, 0, 0, 0, 0.5, 2.5, 2.0, 0.6, 0.4, 0.4, 0.8, 0.6, 0.4, 0.4, 0.8, 1.5,
           3.0, 3.0, 2.5, 2.0, 1.2, 0.3)
DAY_PROFILE = tuple(h * 24 / sum(_HOURLY) for h in _HOURLY)


def hour_of_day(t, day_s, day_start_h=0.0):
    """The hour (0-24) at recording time ``t`` of a day compressed into ``day_s`` seconds."""
    return (day_start_h + 24.0 * t / day_s) % 24.0


class _Gen:
    def __init__(self, rec, device, rng, duration, day_s=None, day_start_h=0.0):
        self.rec, self.device, self.rng, self.duration = rec, device, rng, duration
        self.day_s = day_s or duration
        self.day_start_h = day_start_h

    def pkt(self, t, direction, nbytes, ip, port, proto="tcp"):
        if 0 <= t < self.duration:
            self.rec.add(t, self.device, "synthetic", direction, int(nbytes), proto, ip, port)

    def exchange(self, t, ip, port, up, down, gap=0.03):
        """TLS application records up then down (lists of record sizes), with ACKs."""
        for n in up:
            self.pkt(t, "out", n + TLS + HDR, ip, port)
            t += 0.0005
        self.pkt(t + gap * 0.5, "in", ACK, ip, port)
        t += gap
        for n in down:
            self.pkt(t, "in", n + TLS + HDR, ip, port)
            t += 0.0005
        self.pkt(t + 0.001, "out", ACK, ip, port)
        return t

    def periodic(self, period, jitter, fn, phase=None):
        t = self.rng.uniform(0, period) if phase is None else phase
        while t < self.duration:
            fn(t)
            t += period * (1 + self.rng.uniform(-jitter, jitter))

    def events(self, mean_gap, fn, label):
        """User events: Poisson with the day's profile (thinning), mean gap ``mean_gap``.

        ``fn(t)`` plays one event and returns its end; each is logged as an Event.
        """
        peak = max(DAY_PROFILE)
        t = self.rng.exponential(mean_gap / peak)
        while t < self.duration:
            hour = int(hour_of_day(t, self.day_s, self.day_start_h))
            if self.rng.random() * peak < DAY_PROFILE[hour]:
                end = fn(t) or t
                if t < self.duration:
                    self.rec.events.append(Event(self.device, t, min(end, self.duration), label))
                t = end
            t += self.rng.exponential(mean_gap / peak)

    def local_udp(self, period, nbytes, ip, port):
        self.periodic(period, 0.05, lambda t: self.pkt(t, "out", nbytes, ip, port, "udp"))


def _plug(g):
    (_, mq_ip, mq_port), (_, api_ip, api_port) = SERVICES["plug"]
    # MQTT-over-TLS keep-alive every 30 s: PINGREQ/PINGRESP (2 bytes each).
    g.periodic(30.0, 0.02, lambda t: g.exchange(t, mq_ip, mq_port, [2], [2]))
    # State report every 5 min.
    g.periodic(300.0, 0.05, lambda t: g.exchange(t, mq_ip, mq_port, [180], [40]))

    def switch(t):  # a user switches the plug: command down, state report up, ack down
        t = g.exchange(t, mq_ip, mq_port, [], [220], gap=0.0)
        t = g.exchange(t + 0.08, mq_ip, mq_port, [260, 160], [40])
        return t + 0.5
    g.events(90.0, switch, "switch")
    g.periodic(600.0, 0.1, lambda t: g.exchange(t, api_ip, api_port, [420], [900, 300]))
    g.local_udp(20.0, 214, "255.255.255.255", 6667)


def _camera(g):
    (_, st_ip, st_port), (_, api_ip, api_port) = SERVICES["camera"]
    # Idle: a status beacon every 15 s.
    g.periodic(15.0, 0.05, lambda t: g.exchange(t, api_ip, api_port, [90], [60]))

    def motion(t):  # a motion clip: ~40 KB/s up for 8-25 s (1448-byte segments)
        length = g.rng.uniform(8.0, 25.0)
        rate = g.rng.uniform(30e3, 50e3)
        g.exchange(t, api_ip, api_port, [350], [120])
        end = t + length
        t += 0.2
        while t < end:
            burst = int(rate / 15)  # 15 bursts a second (frames)
            n = max(burst // 1448, 1)
            for i in range(n):
                g.pkt(t + i * 0.0004, "out", 1448 + HDR, st_ip, st_port)
            g.pkt(t + n * 0.0004 + 0.002, "in", ACK, st_ip, st_port)
            t += 1.0 / 15 * (1 + g.rng.uniform(-0.2, 0.2))
        g.exchange(end, st_ip, st_port, [200], [80])
        return end
    g.events(70.0, motion, "motion")
    g.local_udp(30.0, 340, "239.255.255.250", 1900)


def _speaker(g):
    (_, avs_ip, avs_port), (_, met_ip, met_port) = SERVICES["speaker"]
    g.periodic(25.0, 0.05, lambda t: g.exchange(t, avs_ip, avs_port, [40], [40]))
    g.periodic(120.0, 0.1, lambda t: g.exchange(t, met_ip, met_port, [700, 300], [90]))

    def voice(t):  # a spoken request: ~3 s of 32 kbit/s audio up, then a spoken answer down
        length = g.rng.uniform(2.0, 5.0)
        end = t + length
        while t < end:
            g.pkt(t, "out", 200 + TLS + HDR, avs_ip, avs_port)
            if g.rng.random() < 0.5:
                g.pkt(t + 0.01, "in", ACK, avs_ip, avs_port)
            t += 0.05
        size = int(g.rng.uniform(20e3, 60e3))
        t += 0.4
        while size > 0:
            g.pkt(t, "in", min(size, 1448) + HDR, avs_ip, avs_port)
            size -= 1448
            t += 0.004
        g.pkt(t + 0.002, "out", ACK, avs_ip, avs_port)
        return t + 1.0
    g.events(100.0, voice, "voice")
    g.local_udp(10.0, 180, "224.0.0.251", 5353)


def _bridge(g):
    (_, br_ip, br_port), (_, tm_ip, tm_port) = SERVICES["bridge"]
    # Long-poll style sync with the cloud every 10 s, config pull every 2 min.
    g.periodic(10.0, 0.1, lambda t: g.exchange(t, br_ip, br_port, [120], [150]))
    g.periodic(120.0, 0.05, lambda t: g.exchange(t, br_ip, br_port, [500], [1200, 800]))
    # A plain-HTTP time/config check every 5 min.
    g.periodic(300.0, 0.05, lambda t: g.exchange(t, tm_ip, tm_port, [150 - TLS], [400 - TLS]))
    g.local_udp(30.0, 420, "239.255.255.250", 1900)
    g.local_udp(60.0, 160, "224.0.0.251", 5353)


def _thermostat(g):
    (_, hm_ip, hm_port) = SERVICES["thermostat"][0]
    g.periodic(60.0, 0.02, lambda t: g.exchange(t, hm_ip, hm_port, [520], [310]))
    g.periodic(20.0, 0.05, lambda t: g.exchange(t, hm_ip, hm_port, [24], [24]))

    def setpoint(t):  # someone changes the temperature: a few updates back and forth
        for k in range(3):
            t = g.exchange(t + 0.3, hm_ip, hm_port, [300], [600])
        return t
    g.events(200.0, setpoint, "setpoint")
    g.local_udp(60.0, 123 + 42, "10.0.0.123", 123)


_FUNCS = {"plug": _plug, "camera": _camera, "speaker": _speaker, "bridge": _bridge,
          "thermostat": _thermostat}


def home(duration, models=MODELS, seed=1, day_s=None, day_start_h=0.0):
    """A Recording of the synthetic home: one device per model, ``duration`` seconds.

    The run is a day compressed into ``day_s`` seconds (default ``duration``),
    starting at ``day_start_h`` o'clock; ``rec.events`` lists the user events.
    """
    rec = Recording("synthetic(seed=%d)" % seed)
    rec.capture_start = {"synthetic": 0.0}
    rec.day_s = float(day_s or duration)
    rec.day_start_s = day_start_h / 24.0 * rec.day_s
    for i, model in enumerate(models):
        if model not in _FUNCS:
            raise ValueError("no synthetic model %r (models: %s)" % (model, ", ".join(MODELS)))
        rng = np.random.default_rng([seed, i])
        rec.device_class[model] = DEVICE_CLASS[model]
        _FUNCS[model](_Gen(rec, model, rng, float(duration), rec.day_s, day_start_h))
        for name, ip, _port in SERVICES[model]:
            rec.names[ip] = name
    order = sorted(range(len(rec)), key=lambda k: rec.ts[k])
    for col in ("ts", "device", "capture", "direction", "nbytes", "proto", "remote_ip",
                "remote_port"):
        vals = getattr(rec, col)
        setattr(rec, col, [vals[k] for k in order])
    return rec
