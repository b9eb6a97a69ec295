"""The decoy detector: can an attacker who knows the defense tell real events from decoys?

A defense that injects decoy activity (STP's cover periods, the adaptive
shaper's decoy bursts, the WiFi cover's decoy echoes) only helps if the decoys
look like real events. The strongest attacker knows the algorithm and can run
it himself, so he can label traffic "real event" or "decoy" and train on it
(Engelberg & Wool separated cover from real activity in 81 % of 1-s windows
against padding plus shaping). This module plays that attacker on one view:

- Windows of ``window`` seconds, laid as for the events attack.
- A window is *real* (label 1) if it overlaps a real event of its device, a
  *decoy* (label 0) if it overlaps a decoy of its device; windows that overlap
  both, or neither, are left out. An event or decoy without a device (or any,
  on a tunnelled aggregate) applies to every device.
- Features: the events attack's rate features, the device (its index), and,
  when ``day_s`` is given, the time of day (sine and cosine of the phase in the
  day): decoys at hours when real events never happen give themselves away.
- A random forest (balanced class weights) under stratified cross-validation,
  as in :func:`.attacks.infer_events`; balanced accuracy (chance 0.5) and ROC AUC.

A defense wants this near 0.5: the detector cannot tell its decoys from real events.
"""

import numpy as np

from . import features as F
from .attacks import N_FOLDS, forest_cv


class Span:
    """A real event or a decoy: (device name or None for all, start, end) in the records' time."""

    __slots__ = ("device", "end", "start")

    def __init__(self, device, start, end=None):
        self.device, self.start = device, float(start)
        self.end = float(start if end is None else end)

    def __repr__(self):
        return "Span(%r, %.3f, %.3f)" % (self.device, self.start, self.end)


def _hits(windows, records, spans):
    """Mask of windows that overlap one of ``spans`` (of the window's device)."""
    n = windows.n
    hit = np.zeros(n, dtype=bool)
    w_start, w_end = windows.start, windows.start + windows.w
    for sp in spans:
        if records.tunnelled or sp.device is None:
            mine = np.ones(n, dtype=bool)
        else:
            idx = [i for i, d in enumerate(records.devices) if sp.device in d.split("+")]
            mine = np.isin(windows.device, idx)
        hit |= mine & (w_start <= sp.end) & (w_end > sp.start)
    return hit


def detect(records, real, decoys, window=10.0, day_s=None, day_start_s=0.0, seed=0,
           n_estimators=100):
    """Balanced accuracy of telling real-event windows from decoy windows (a dict)."""
    res = {"attack": "decoy", "view": records.view, "window": window,
           "tunnelled": bool(records.tunnelled), "chance": 0.5, "real_spans": len(real),
           "decoy_spans": len(decoys), "day_s": day_s}
    windows = F.Windows(records, window)
    x, names = F.rate_features(records, windows, 1.0 if window >= 1 else window)
    is_real = _hits(windows, records, real)
    is_decoy = _hits(windows, records, decoys)
    use = is_real ^ is_decoy
    cols = [x, windows.device[:, None].astype(np.float64)]
    names = names + ["device"]
    if day_s:
        phase = 2 * np.pi * ((windows.start + day_start_s) % day_s) / day_s
        cols += [np.sin(phase)[:, None], np.cos(phase)[:, None]]
        names = names + ["day_sin", "day_cos"]
    xs = np.column_stack(cols)[use]
    ys = is_real[use].astype(np.int64)
    order = np.argsort(windows.start[use], kind="stable")
    xs, ys = xs[order], ys[order]
    n_real, n_decoy = int(ys.sum()), int(len(ys) - ys.sum())
    res.update({"real_windows": n_real, "decoy_windows": n_decoy,
                "both_windows": int((is_real & is_decoy).sum()), "features": names})
    n_folds = min(N_FOLDS, n_real, n_decoy)
    if n_folds < 2:
        res.update({"balanced_accuracy": None, "roc_auc": None, "folds": n_folds,
                    "note": "too few real-event or decoy windows (%d, %d) for cross-validation"
                            % (n_real, n_decoy)})
        return res
    res.update(forest_cv(xs, ys, n_folds, seed, n_estimators))
    return res
