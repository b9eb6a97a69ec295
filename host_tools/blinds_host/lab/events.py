"""User-event tables and the labels they give to windows.

EVENTS.csv needs a time and a label; the shared data sets use two layouts, both
read here:

- ``ts,device,label`` (the documented form), optionally with ``end_ts`` or
  ``duration_s``; ``ssi_smart_plug/events.csv`` has ``ts,capture,rel_s,label,...``
  and no device column (its events then apply to every device);
- ``device,phase,start_ts,end_ts,...`` (``lifecycle_nku/events.csv``): the phase
  is the label.

An event without an end is an instant. Labels ``X_start`` / ``X_end`` of the
same device are paired into one interval labelled ``X`` (the manual on/off
period of the smart-plug set).

Window labels: a window is *positive* if it overlaps an event whose label
matches one of the positive patterns (default: every label that is not
background); *background* labels (default ``idle*`` and ``marker``: long idle
phases, start/end-of-capture markers) never count; a window that overlaps only
some other, non-selected event is *ambiguous* and left out, so that windows with
user activity of another kind are not counted as "no event".
"""

import csv
import fnmatch
import io

import numpy as np

from ..errors import UsageError
from .traces import _read_text

DEFAULT_BACKGROUND = ("idle*", "marker")


class Event:
    __slots__ = ("device", "end", "label", "start")

    def __init__(self, device, start, end, label):
        self.device, self.start, self.end, self.label = device, start, end, label

    def __repr__(self):
        return "Event(%r, %.3f, %.3f, %r)" % (self.device, self.start, self.end, self.label)


def read_events(path):
    """Read an events table into a list of :class:`Event` (device None = all devices)."""
    text = _read_text(path)
    reader = csv.reader(io.StringIO(text))
    try:
        header = [h.strip().lower() for h in next(reader)]
    except StopIteration:
        raise UsageError("%s: empty events file" % path)
    col = {h: i for i, h in enumerate(header)}
    t_col = "ts" if "ts" in col else "start_ts" if "start_ts" in col else None
    l_col = next((c for c in ("label", "phase", "event") if c in col), None)
    if t_col is None or l_col is None:
        raise UsageError("%s: an events table needs a time column (ts or start_ts) and a "
                         "label column (label or phase)" % path)
    raw = []
    for lineno, row in enumerate(reader, start=2):
        if not row or not any(x.strip() for x in row):
            continue
        def cell(name, row=row):
            return row[col[name]].strip() if name in col and col[name] < len(row) else ""

        try:
            start = float(cell(t_col))
            end = start
            if cell("end_ts"):
                end = float(cell("end_ts"))
            elif cell("duration_s"):
                end = start + float(cell("duration_s"))
        except ValueError:
            raise UsageError("%s line %d: bad time value" % (path, lineno))
        if end < start:
            raise UsageError("%s line %d: event ends before it starts" % (path, lineno))
        raw.append(Event(cell("device") or None, start, end, cell(l_col)))
    if not raw:
        raise UsageError("%s: no events" % path)
    return _pair_start_end(raw)


def _pair_start_end(events):
    out, open_ = [], {}
    for ev in sorted(events, key=lambda e: e.start):
        if ev.label.endswith("_start"):
            open_[(ev.device, ev.label[:-6])] = ev
        elif ev.label.endswith("_end") and (ev.device, ev.label[:-4]) in open_:
            first = open_.pop((ev.device, ev.label[:-4]))
            out.append(Event(ev.device, first.start, ev.end, ev.label[:-4]))
        else:
            out.append(ev)
    out.extend(open_.values())  # a start without end stays an instant
    return sorted(out, key=lambda e: e.start)


def matches(label, patterns):
    """True if ``label`` matches one of the glob ``patterns``."""
    return any(fnmatch.fnmatchcase(label, p) for p in patterns)


def label_windows(windows, records, events, positive=None, background=DEFAULT_BACKGROUND):
    """Label each window: 1 positive, 0 negative, -1 ambiguous (left out).

    Returns (labels, hits): ``hits`` lists (label, window mask) per positive event.

    ``positive``: label patterns that count (None: every non-background label).
    For a tunnelled uplink every event counts for the aggregate device.
    """
    n = windows.n
    labels = np.zeros(n, dtype=np.int64)
    touched_other = np.zeros(n, dtype=bool)
    w_start = windows.start
    w_end = windows.start + windows.w
    used = []  # (label, window mask) of each positive event that hit a window
    for ev in events:
        if matches(ev.label, background):
            continue
        if records.tunnelled or ev.device is None:
            mine = np.ones(n, dtype=bool)
        else:
            # A merged device ("A+B", devices sharing a MAC) carries the events of each part.
            idx = [i for i, d in enumerate(records.devices) if ev.device in d.split("+")]
            mine = np.isin(windows.device, idx)
        # Interval [start, end] overlaps [w_start, w_end); an instant lies inside it.
        hit = mine & (w_start <= ev.end) & (w_end > ev.start)
        if positive is None or matches(ev.label, positive):
            labels[hit] = 1
            if hit.any():
                used.append((ev.label, hit))
        else:
            touched_other |= hit
    labels[(labels == 0) & touched_other] = -1
    return labels, used
