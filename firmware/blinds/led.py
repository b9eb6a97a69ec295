# What the hub's LED says: a state machine with no hardware in it. The board
# hands it a driver whose show((r, g, b)) lights the LED (boards/esp32/leddrv.py:
# a GPIO LED, lit for any colour but black, or one NeoPixel); the board sets
# the states it knows first (boot, provisioning, no uplink), the hub the rest
# once it runs (hub_state). Improv's "identify" overrides the state for a while.
from blinds.compat import const, ticks_diff, ticks_ms

BOOT = "boot"
PROVISIONING = "provisioning"  # waiting for Wi-Fi credentials (Improv, BLE advertising)
NO_UPLINK = "no_uplink"  # the AP is up; devices' traffic cannot leave (uplink or tunnel down)
UPLINK = "uplink"  # running, traffic leaves directly
TUNNEL = "tunnel"  # running, traffic leaves through the tunnel
REFUSING = "refusing"  # refusal mode: the status says why
IDENTIFY = "identify"  # Improv's identify, for IDENTIFY_MS
STOPPED = "stopped"

OFF = (0, 0, 0)
# state -> (colour, durations in ms: on, off, on, off, ...), repeated. One "on"
# duration alone: steady. Colours are dim: an LED in a living room.
PATTERNS = {
    BOOT: ((24, 24, 24), (1000,)),  # steady white
    PROVISIONING: ((0, 0, 32), (500, 500)),  # slow blink, blue
    NO_UPLINK: ((32, 16, 0), (150, 150, 150, 1550)),  # double flash every 2 s, amber
    UPLINK: ((0, 24, 0), (1000,)),  # steady green
    TUNNEL: ((0, 16, 24), (1900, 100)),  # steady, a short dip every 2 s, cyan
    REFUSING: ((40, 0, 0), (100, 100)),  # fast blink, red
    IDENTIFY: ((32, 0, 32), (50, 50)),  # very fast blink, magenta
    STOPPED: (OFF, (1000,)),  # off
}
IDENTIFY_MS = const(10000)
_STEADY_MS = const(60000)  # a steady state's "next change"
_MAX_WAIT_MS = const(200)  # how late the blinker may notice a new state
_MAX_PIN = const(48)  # the highest GPIO of the ESP32 family (S3)
_KINDS = ("gpio", "gpio_low", "neopixel")


def level(state, t):
    """(colour, ms until it changes) of ``state``, ``t`` >= 0 ms after it began."""
    colour, steps = PATTERNS[state]
    if len(steps) == 1:
        return colour, _STEADY_MS
    t %= sum(steps)
    i = 0
    while t >= steps[i]:
        t -= steps[i]
        i += 1
    return (colour if i % 2 == 0 else OFF), steps[i] - t


def parse(spec):
    """The LED of ``hub.led``: "default" (or None) -> ("default", None); "none"
    -> ("none", None); "gpio:N", "gpio_low:N" (lit when low), "neopixel:N" ->
    (kind, N). ValueError for anything else."""
    if spec is None or spec == "default" or spec == "none":
        return (spec or "default"), None
    if not isinstance(spec, str) or ":" not in spec:
        raise ValueError("must be \"default\", \"none\" or KIND:PIN (KIND gpio, gpio_low or "
                         "neopixel)")
    kind, pin = spec.split(":", 1)
    if kind not in _KINDS:
        raise ValueError("LED kind %r is not one of gpio, gpio_low, neopixel" % kind)
    if not (0 < len(pin) <= 2 and all("0" <= c <= "9" for c in pin) and int(pin) <= _MAX_PIN):
        raise ValueError("LED pin %r is not a GPIO number 0..%d" % (pin, _MAX_PIN))
    return kind, int(pin)


class Indicator:
    """The LED's state machine. ``driver``: an object with show(colour), or
    None (the state is kept and reported, nothing is lit); ``clock``: ms ticks."""

    def __init__(self, driver=None, clock=ticks_ms):
        self.driver = driver
        self.clock = clock
        self.state = BOOT
        self.since = clock()
        self.identify_from = None  # ticks_ms when identify began
        self.identify_ms = 0
        self.shown = None  # the colour last written
        self.changes = 0  # state changes
        self.identifies = 0
        self.errors = 0  # driver writes that failed (the LED is a convenience)
        self.tick()

    def set(self, state):
        if state not in PATTERNS:
            raise ValueError("no LED state %r" % (state,))
        if state != self.state:
            self.state = state
            self.since = self.clock()
            self.changes += 1
        self.tick()

    def identify(self, ms=IDENTIFY_MS):
        """Blink fast for ``ms`` (Improv's identify), whatever the state."""
        self.identifies += 1
        self.identify_from = self.clock()
        self.identify_ms = ms
        self.tick()

    def end_identify(self):
        self.identify_from = None
        self.tick()

    def now(self, now=None):
        """(state shown, colour, ms until it changes) at ``now`` (ticks_ms)."""
        if now is None:
            now = self.clock()
        start = self.identify_from
        if start is not None:
            t = ticks_diff(now, start)
            if 0 <= t < self.identify_ms:
                colour, wait = level(IDENTIFY, t)
                return IDENTIFY, colour, min(wait, self.identify_ms - t)
            self.identify_from = None
        colour, wait = level(self.state, ticks_diff(now, self.since))
        return self.state, colour, wait

    def tick(self):
        """Show what the LED says now; -> ms until it changes."""
        _state, colour, wait = self.now()
        if colour != self.shown and self.driver is not None:
            try:
                self.driver.show(colour)
                self.shown = colour
            except (OSError, ValueError):
                self.errors += 1
        return wait

    async def run(self):
        # The blinker: returns at once without an LED to light.
        import asyncio

        while self.driver is not None:
            await asyncio.sleep_ms(min(self.tick(), _MAX_WAIT_MS))

    def status(self):
        return {"state": self.now()[0], "changes": self.changes, "identifies": self.identifies,
                "errors": self.errors}


def hub_state(hub):
    """What the LED says of a hub (blinds.hub.Hub); None while it starts (the
    board says what it is doing: booting, waiting for its uplink)."""
    s = hub.state
    if s == "refusing":
        return REFUSING
    if s == "stopped":
        return STOPPED
    if s != "running":
        return None
    link = hub.tunnel
    if link is not None and link.is_up():
        return TUNNEL
    if link is not None and hub.cfg["tunnel"]["fallback"] != "direct":
        return NO_UPLINK  # the kill switch: nothing leaves
    up = getattr(hub.board, "uplink_up", None)
    return UPLINK if up is None or up() else NO_UPLINK
