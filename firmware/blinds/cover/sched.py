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
#
# Chaff: with chaff_pct > 0, each owed byte also owes chaff_pct/100 bytes of
# AP->device frames the device drops (next_chaff(); the service sends
# unsolicited echo replies), of the same size distribution and from the same
# bucket. An echo request is always followed by a reply of its length; chaff
# is not, so a request alone no longer marks cover. While an echo frame waits
# for the bucket (a budget that binds: a decoy), chaff is paid only from its
# credit, chaff_pct % of the echo sent (at most a frame's worth kept): a
# chaff frame smaller than the waiting echo frame no longer takes the bucket
# first, so the device's own replies get at least their share.
#
# Level: with level_Bps > 0, blinds.cover.level raises each device's WLAN
# bytes per window to a common level, its own traffic counted (own()).
from array import array

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
_MAX_DECOY_MS = const(3600000)


# Per-device state lives in arrays, one entry per configured device, fixed at
# boot: a few hundred bytes for 64 devices where objects would take tens of KB.
# State and times fit 32 bits; byte counters are 64-bit.
COUNTERS = ("sent", "sent_bytes", "answered", "answered_bytes", "decoys", "decoys_dropped",
            "cut_bytes", "silences", "chaff_bytes")


def _i32(n):
    return array("i", bytes(4 * n))


def _i64(n):
    return array("q", bytes(8 * n))


class Schedule:
    def __init__(self, budgets, wcfg, rand):
        # budgets: bytes/s per device (0: not covered); wcfg: cover.wifi;
        # rand(n) -> an integer in 0..n-1.
        self.floor = wcfg["floor_Bps"]
        self.max_frame = wcfg["max_frame"]
        self.answer_ms = wcfg["answer_ms"]
        self.backoff0_ms = wcfg["backoff_s"] * 1000
        self.max_backoff_ms = wcfg["max_backoff_s"] * 1000
        self.rand = rand
        self.chaff_pct = wcfg.get("chaff_pct", 0)
        self.level = wcfg.get("level_Bps", 0)
        self.lv = None
        if self.level:
            from blinds.cover.level import Level

            self.lv = Level(len(budgets), wcfg)
        self.n = n = len(budgets)
        self.state = _i32(n)
        self.budget = _i32(n)
        self.cap = _i32(n)
        self.tokens = _i32(n)  # the bucket, bytes
        self.tok_rem = _i32(n)  # and thousandths of a byte
        self.owed = _i32(n)  # floor and decoy bytes due and not sent yet
        self.floor_rem = _i32(n)
        self.frame = _i32(n)  # the size of the next frame, drawn when needed
        self.chaff = _i32(n)  # chaff bytes owed, and the next chaff frame's size
        self.c_frame = _i32(n)
        self.credit = _i32(n)  # chaff's credit, hundredths of a byte
        self.d_bytes = _i32(n)  # the decoy under way: bytes, duration, start, bytes due so far
        self.d_ms = _i32(n)
        self.d_start = _i32(n)
        self.d_done = _i32(n)
        self.p_bytes = _i32(n)  # one decoy waiting behind it
        self.p_ms = _i32(n)
        self.unanswered = _i32(n)  # requests since the last reply
        self.miss_ms = _i32(n)  # when the first of them left
        self.probe_out = _i32(n)
        self.until_ms = _i32(n)  # end of a silent device's backoff
        self.backoff_ms = _i32(n)
        self.c_sent = _i64(n)
        self.c_sent_bytes = _i64(n)
        self.c_answered = _i64(n)
        self.c_answered_bytes = _i64(n)
        self.c_decoys = _i64(n)
        self.c_decoys_dropped = _i64(n)
        self.c_cut_bytes = _i64(n)
        self.c_silences = _i64(n)
        self.c_chaff_bytes = _i64(n)
        for i in range(n):
            b = budgets[i]
            self.budget[i] = b
            self.cap[i] = self.tokens[i] = b * wcfg["burst_s"]  # the bucket starts full
            self.state[i] = ABSENT if b else OFF
        self.last_ms = None

    # -- time ------------------------------------------------------------------
    def advance(self, now):
        # Fill the buckets, and owe each answering device its floor and its
        # decoys' bytes for the time since the last call.
        last, self.last_ms = self.last_ms, now
        if last is None:
            if self.lv is not None:
                self.lv.begin(now)
            return
        dt = ticks_diff(now, last)
        if dt <= 0:
            return
        if dt > _MAX_DT_MS:
            dt = _MAX_DT_MS
        state, tokens, tok_rem, cap = self.state, self.tokens, self.tok_rem, self.cap
        floor_rem = self.floor_rem
        for i in range(self.n):
            if state[i] == OFF:
                continue
            v = self.budget[i] * dt + tok_rem[i]
            tokens[i] += v // 1000
            tok_rem[i] = v % 1000
            if tokens[i] >= cap[i]:
                tokens[i] = cap[i]
                tok_rem[i] = 0
            v = self.floor * dt + floor_rem[i]
            add = v // 1000
            floor_rem[i] = v % 1000
            if self.d_bytes[i]:
                add += self._decoy_due(i, now)
            if self.lv is not None:
                add += self.lv.want(i, now, add, state[i] == ANSWERING)
            if state[i] == ANSWERING:
                self.owed[i] += add
                if self.chaff_pct:
                    self.chaff[i] += add * self.chaff_pct // 100

    def _decoy_due(self, i, now):
        # The decoy's bytes that fell due since the last call: spread evenly
        # over its duration (decoys run on time whether sent or not).
        el = ticks_diff(now, self.d_start[i])
        b, ms = self.d_bytes[i], self.d_ms[i]
        due = b if el >= ms else b * el // ms
        add = due - self.d_done[i]
        self.d_done[i] = due
        if el >= ms:
            self.d_bytes[i], self.d_ms[i] = self.p_bytes[i], self.p_ms[i]
            self.p_bytes[i] = self.p_ms[i] = 0
            self.d_start[i] = now
            self.d_done[i] = 0
        return add

    def own(self, i, nbytes):
        # Device i's own WLAN bytes since the last call (the hub's counters):
        # they count toward the level.
        if self.lv is not None:
            self.lv.own(i, nbytes)

    def decoy(self, i, nbytes, duration_ms, now):
        # Queue a decoy of nbytes over duration_ms for device i: it starts now
        # if none is under way, else after it; a third is dropped. -> queued?
        if self.state[i] == OFF or nbytes <= 0:
            return False
        nbytes = min(nbytes, _MAX_DECOY_BYTES)
        duration_ms = min(max(duration_ms, _MIN_DECOY_MS), _MAX_DECOY_MS)
        if not self.d_bytes[i]:
            self.d_bytes[i], self.d_ms[i], self.d_start[i] = nbytes, duration_ms, now
            self.d_done[i] = 0
        elif not self.p_bytes[i]:
            self.p_bytes[i], self.p_ms[i] = nbytes, duration_ms
        else:
            self.c_decoys_dropped[i] += 1
            return False
        self.c_decoys[i] += 1
        return True

    # -- sending ----------------------------------------------------------------
    def next(self, i, now):
        # The size of a frame to have device i send now, taken from its bucket;
        # 0 when nothing is due.
        st = self.state[i]
        if st == PROBING:
            if self.probe_out[i] or self.tokens[i] < MIN_FRAME:
                return 0
            self.probe_out[i] = 1
            self.tokens[i] -= MIN_FRAME
            return MIN_FRAME
        if st != ANSWERING:
            return 0
        f = self._take(i, self.owed, self.frame)
        if f and self.chaff_pct:
            self.credit[i] = min(self.credit[i] + f * self.chaff_pct, self.max_frame * 100)
        return f

    def _take(self, i, owed, frame, credit=None):
        # A frame from owed[i] and the bucket (and the credit, if given), its
        # size drawn once and kept in frame[i] until they can pay for it.
        f = frame[i]
        if not f:
            f = frame[i] = self._size(self.cap[i])
        if not f or owed[i] < f or self.tokens[i] < f or \
                (credit is not None and credit < f * 100):
            return 0
        owed[i] -= f
        self.tokens[i] -= f
        frame[i] = 0
        return f

    def _size(self, cap):
        # Sizes drawn uniformly, floor, decoys and chaff alike: a frame's
        # length does not tell which it carries. (Sizes learned from each
        # device's own frames were measured and left out: docs/cover.md.)
        # Never larger than the device's bucket, which could not pay for it
        # ever (the config refuses such budgets); 0 if not even the smallest.
        top = self.max_frame if self.max_frame <= cap else cap
        if top < MIN_FRAME:
            return 0
        return MIN_FRAME + self.rand(top - MIN_FRAME + 1)

    def next_chaff(self, i, now):
        # The size of a chaff frame (AP->device, not answered) to send device i
        # now, taken from its bucket; 0 when none is due.
        if self.state[i] != ANSWERING:
            return 0
        e = self.frame[i]  # an echo frame waiting for the bucket: chaff on credit only
        f = self._take(i, self.chaff, self.c_frame,
                       self.credit[i] if e and self.owed[i] >= e > self.tokens[i] else None)
        self.c_chaff_bytes[i] += f
        self.credit[i] -= f * 100
        return f

    def settle(self, i):
        # After a turn's frames: what is owed beyond one frame was not sent in
        # its time (budget, or the turn's limit), and is cut.
        over = self.owed[i] - self.max_frame
        if over > 0:
            self.c_cut_bytes[i] += over
            self.owed[i] = self.max_frame
        over = self.chaff[i] - self.max_frame
        if over > 0:
            self.c_cut_bytes[i] += over
            self.chaff[i] = self.max_frame

    def sent(self, i, f, now):
        self.c_sent[i] += 1
        self.c_sent_bytes[i] += f
        if not self.unanswered[i]:
            self.miss_ms[i] = now
        self.unanswered[i] += 1

    def answered(self, i, f, now):
        # -> EV_BACK when a silent device answers again, else 0.
        self.c_answered[i] += 1
        self.c_answered_bytes[i] += f
        self.unanswered[i] = 0
        st = self.state[i]
        if st == SILENT or st == PROBING:
            self.state[i] = ANSWERING
            self.backoff_ms[i] = 0
            self.probe_out[i] = 0
            return EV_BACK
        return 0

    # -- answers and presence --------------------------------------------------------
    def check(self, i, now):
        # Move device i between answering, silent and probing; -> an EV_ or 0.
        st = self.state[i]
        if st == ANSWERING:
            if self.unanswered[i] >= _MISSES and \
                    ticks_diff(now, self.miss_ms[i]) >= self.answer_ms:
                self.backoff_ms[i] = self.backoff0_ms
                self._silence(i, now)
                return EV_SILENT
        elif st == SILENT:
            if ticks_diff(now, self.until_ms[i]) >= 0:
                self.state[i] = PROBING
                self.probe_out[i] = 0
                self.unanswered[i] = 0
        elif st == PROBING:
            if self.probe_out[i] and self.unanswered[i] and \
                    ticks_diff(now, self.miss_ms[i]) >= self.answer_ms:
                self.backoff_ms[i] = min(self.backoff_ms[i] * 2, self.max_backoff_ms)
                self._silence(i, now)
                return EV_STILL
        return 0

    def _silence(self, i, now):
        self.state[i] = SILENT
        self.c_silences[i] += 1
        self.until_ms[i] = ticks_add(now, self.backoff_ms[i])
        self.owed[i] = 0
        self.frame[i] = 0
        self.chaff[i] = 0

    def present(self, i, here):
        # The station table says whether device i has an address.
        st = self.state[i]
        if st == OFF:
            return
        if not here:
            self.state[i] = ABSENT
            self.owed[i] = 0
            self.chaff[i] = 0
            self.unanswered[i] = 0
        elif st == ABSENT:
            self.state[i] = ANSWERING

    def status(self, i):
        d = {"state": STATES[self.state[i]], "budget_Bps": self.budget[i],
             "backoff_s": self.backoff_ms[i] // 1000}
        for k in COUNTERS:
            d[k] = getattr(self, "c_" + k)[i]
        if self.lv is not None:
            d["own_bytes"] = self.lv.c_own[i]
            d["level_bytes"] = self.lv.c_echo[i]
        return d
