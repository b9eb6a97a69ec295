# The WiFi cover's schedule, without I/O: per device, how many bytes its radio
# should send and when (a floor rate, plus decoys as they come), within its
# budget, and whether it answers. The service (blinds.cover.wifi) asks next()
# for frame sizes each turn and reports what was sent and answered.
#
# Units: bytes of the frames the device sends (the echo replies), as a capture
# of the WiFi segment counts them. Rates are integer bytes per second, carried
# with a remainder in thousandths, so nothing here needs floats.
#
# Budget: a token bucket per device, filled at budget_Bps up to budget_Bps *
# burst_s; every frame takes its size from it. Floor and decoy bytes not sent
# within a frame's worth of their time (over budget, or more than a turn may
# send) are cut and counted, so the cover never lags behind the story it tells.
#
# Answers: a device that leaves _MISSES requests in a row unanswered for
# answer_ms is left alone for backoff_s, then gets one small probe; each probe
# that goes unanswered doubles the wait, up to max_backoff_s.
from blinds.compat import const, ticks_add, ticks_diff
from blinds.cover.echo import MIN_FRAME

OFF = const(0)  # budget 0: never touched
ABSENT = const(1)  # no address known: nothing to send to
ANSWERING = const(2)
SILENT = const(3)  # does not answer: left alone until its backoff ends
PROBING = const(4)  # one small probe out after a backoff
STATES = ("off", "absent", "answering", "silent", "probing")

# What check() reports, for the service's log.
EV_SILENT = const(1)
EV_STILL = const(2)
EV_BACK = const(3)

_MISSES = const(3)
_MAX_DT_MS = const(2000)  # a stalled loop does not come back to a flood
_MAX_DECOY_BYTES = const(1048576)
_MIN_DECOY_MS = const(1)


class Slot:
    # Class attributes are the defaults (see blinds.devices.Device).
    state = ABSENT
    tokens = 0
    tok_rem = 0
    owed = 0
    floor_rem = 0
    frame = 0  # the size of the next frame, drawn when needed
    d_bytes = 0  # the decoy under way: bytes, duration, start, bytes due so far
    d_ms = 0
    d_start = 0
    d_done = 0
    p_bytes = 0  # one decoy waiting behind it
    p_ms = 0
    unanswered = 0
    miss_ms = 0
    probe_out = False
    until_ms = 0
    backoff_ms = 0
    sent = 0
    sent_bytes = 0
    answered = 0
    answered_bytes = 0
    decoys = 0
    decoys_dropped = 0
    cut_bytes = 0
    silences = 0

    def __init__(self, budget, cap):
        self.budget = budget
        self.cap = cap
        if budget:
            self.tokens = cap  # the bucket starts full
        else:
            self.state = OFF


class Schedule:
    def __init__(self, budgets, wcfg, rand):
        # budgets: bytes/s per device (0: not covered); wcfg: cover.wifi;
        # rand(n) -> an integer in 0..n-1.
        self.floor = wcfg["floor_Bps"]
        self.max_frame = wcfg["max_frame"]
        self.answer_ms = wcfg["answer_ms"]
        self.backoff_ms = wcfg["backoff_s"] * 1000
        self.max_backoff_ms = wcfg["max_backoff_s"] * 1000
        self.rand = rand
        self.slots = [Slot(b, b * wcfg["burst_s"]) for b in budgets]
        self.last_ms = None

    # -- time ------------------------------------------------------------------
    def advance(self, now):
        # Fill the buckets, and owe each answering device its floor and its
        # decoys' bytes for the time since the last call.
        last, self.last_ms = self.last_ms, now
        if last is None:
            return
        dt = ticks_diff(now, last)
        if dt <= 0:
            return
        if dt > _MAX_DT_MS:
            dt = _MAX_DT_MS
        for s in self.slots:
            if s.state == OFF:
                continue
            v = s.budget * dt + s.tok_rem
            s.tokens += v // 1000
            s.tok_rem = v % 1000
            if s.tokens >= s.cap:
                s.tokens = s.cap
                s.tok_rem = 0
            v = self.floor * dt + s.floor_rem
            add = v // 1000
            s.floor_rem = v % 1000
            if s.d_bytes:
                add += self._decoy_due(s, now)
            if s.state == ANSWERING:
                s.owed += add

    def _decoy_due(self, s, now):
        # The decoy's bytes that fell due since the last call: spread evenly
        # over its duration (decoys run on time whether sent or not).
        el = ticks_diff(now, s.d_start)
        due = s.d_bytes if el >= s.d_ms else s.d_bytes * el // s.d_ms
        add = due - s.d_done
        s.d_done = due
        if el >= s.d_ms:
            s.d_bytes, s.d_ms, s.p_bytes, s.p_ms = s.p_bytes, s.p_ms, 0, 0
            s.d_start = now
            s.d_done = 0
        return add

    def decoy(self, i, nbytes, duration_ms, now):
        # Queue a decoy of nbytes over duration_ms for device i: it starts now
        # if none is under way, else after it; a third is dropped. -> queued?
        s = self.slots[i]
        if s.state == OFF or nbytes <= 0:
            return False
        nbytes = min(nbytes, _MAX_DECOY_BYTES)
        duration_ms = max(duration_ms, _MIN_DECOY_MS)
        if not s.d_bytes:
            s.d_bytes, s.d_ms, s.d_start, s.d_done = nbytes, duration_ms, now, 0
        elif not s.p_bytes:
            s.p_bytes, s.p_ms = nbytes, duration_ms
        else:
            s.decoys_dropped += 1
            return False
        s.decoys += 1
        return True

    # -- sending ----------------------------------------------------------------
    def next(self, i, now):
        # The size of a frame to have device i send now, taken from its bucket;
        # 0 when nothing is due.
        s = self.slots[i]
        if s.state == PROBING:
            if s.probe_out or s.tokens < MIN_FRAME:
                return 0
            s.probe_out = True
            s.tokens -= MIN_FRAME
            return MIN_FRAME
        if s.state != ANSWERING:
            return 0
        f = s.frame
        if not f:
            # Sizes drawn uniformly, floor and decoys alike: a frame's length
            # does not tell which it carries.
            f = s.frame = MIN_FRAME + self.rand(self.max_frame - MIN_FRAME + 1)
        if s.owed < f or s.tokens < f:
            return 0
        s.owed -= f
        s.tokens -= f
        s.frame = 0
        return f

    def settle(self, i):
        # After a turn's frames: what is owed beyond one frame was not sent in
        # its time (budget, or the turn's limit), and is cut.
        s = self.slots[i]
        if s.owed > self.max_frame:
            s.cut_bytes += s.owed - self.max_frame
            s.owed = self.max_frame

    def sent(self, i, f, now):
        s = self.slots[i]
        s.sent += 1
        s.sent_bytes += f
        if not s.unanswered:
            s.miss_ms = now
        s.unanswered += 1

    def answered(self, i, f, now):
        # -> EV_BACK when a silent device answers again, else 0.
        s = self.slots[i]
        s.answered += 1
        s.answered_bytes += f
        s.unanswered = 0
        if s.state == SILENT or s.state == PROBING:
            s.state = ANSWERING
            s.backoff_ms = 0
            s.probe_out = False
            return EV_BACK
        return 0

    # -- answers and presence --------------------------------------------------------
    def check(self, i, now):
        # Move device i between answering, silent and probing; -> an EV_ or 0.
        s = self.slots[i]
        if s.state == ANSWERING:
            if s.unanswered >= _MISSES and ticks_diff(now, s.miss_ms) >= self.answer_ms:
                s.backoff_ms = self.backoff_ms
                self._silence(s, now)
                return EV_SILENT
        elif s.state == SILENT:
            if ticks_diff(now, s.until_ms) >= 0:
                s.state = PROBING
                s.probe_out = False
                s.unanswered = 0
        elif s.state == PROBING:
            if s.probe_out and s.unanswered and ticks_diff(now, s.miss_ms) >= self.answer_ms:
                s.backoff_ms = min(s.backoff_ms * 2, self.max_backoff_ms)
                self._silence(s, now)
                return EV_STILL
        return 0

    def _silence(self, s, now):
        s.state = SILENT
        s.silences += 1
        s.until_ms = ticks_add(now, s.backoff_ms)
        s.owed = 0
        s.frame = 0

    def present(self, i, here):
        # The station table says whether device i has an address.
        s = self.slots[i]
        if s.state == OFF:
            return
        if not here:
            s.state = ABSENT
            s.owed = 0
            s.unanswered = 0
        elif s.state == ABSENT:
            s.state = ANSWERING

    def status(self, i):
        s = self.slots[i]
        return {"state": STATES[s.state], "budget_Bps": s.budget, "sent": s.sent,
                "sent_bytes": s.sent_bytes, "answered": s.answered,
                "answered_bytes": s.answered_bytes, "decoys": s.decoys,
                "decoys_dropped": s.decoys_dropped, "cut_bytes": s.cut_bytes,
                "silences": s.silences, "backoff_s": s.backoff_ms // 1000}
