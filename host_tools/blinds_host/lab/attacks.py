"""The attacks: device identification (k-NN on rates; random forest on sizes) and
behaviour (user-event) inference, with the evaluation they share.

Device identification follows Apthorpe, Reisman and Feamster, "Closing the
Blinds" (2017): per device, bytes per ``s``-second sample; consecutive
``w``-second windows; features (mean, std) of the window's samples; k nearest
neighbours (Euclidean, on the raw features, which share one unit: bytes per
sample); accuracy by 10-fold stratified cross-validation.

Ties. Silent windows all have the features (0, 0), and periodic keep-alive
traffic gives many identical windows too, so exact ties are common. A stock
k-NN breaks them by the order of the training arrays, which makes the score
depend on how devices happen to be named and ordered. Here ties are broken
fairly instead, and the result is the expected accuracy under random
tie-breaking: training windows tied at the k-th distance share the remaining
votes equally, and when several classes tie for most votes a test window scores
1/(number of tied classes) if its class is among them. Without ties this is
exactly the ordinary k-NN majority vote. The same scoring is applied to the
random forest's class probabilities.

Folds. Each class's windows, in time order, are dealt to the folds in a random
order drawn from the seed and the class size only, so neither the folds nor the
accuracy depend on the device names. Accuracy is pooled over all test windows
(every window is tested exactly once); ``fold_std`` is the spread of the
per-fold accuracies. The ``time`` split trains on the first 70 % of each class's
windows (in time order) and tests on the rest.
"""

import numpy as np

from ..errors import UsageError
from . import features as F
from .events import label_windows, matches

N_FOLDS = 10
TIME_TRAIN_SHARE = 0.7
BOOT_N = 2000  # bootstrap resamples for a balanced accuracy's interval
CI_LEVEL = 0.95
KNN_EXTRA = 8  # distinct neighbours fetched beyond k to see ties at the k-th distance
# A random forest grows its trees in parallel only from this many training
# samples: below it the threads cost more than they save (2 cores, 100 trees:
# 0.09 s one thread against 0.15 s two at 50 samples, 2.0 s against 2.8 s at
# 10,000; two threads win at 30,000). The trees are the same either way.
FOREST_PARALLEL_FROM = 20000

GRID_S = (1, 5, 10)
GRID_W = (60, 120, 300, 600)
GRID_K = (1, 3, 5, 7)
SPLITS = ("cv", "time")
CLASSES = ("device", "capture")


# --- evaluation ----------------------------------------------------------------------


def stratified_folds(y, n_folds, seed):
    """Fold number per sample: each class dealt evenly over the folds, label-blind.

    Samples must be given in time order within each class; the permutation used
    for a class depends only on ``seed`` and the class size.
    """
    y = np.asarray(y)
    fold = np.zeros(len(y), dtype=np.int64)
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        rng = np.random.default_rng([int(seed), len(idx)])
        fold[idx[rng.permutation(len(idx))]] = np.arange(len(idx)) % n_folds
    return fold


def time_split(y, start):
    """Boolean train mask: the first 70 % of each class's windows in time order."""
    y = np.asarray(y)
    train = np.zeros(len(y), dtype=bool)
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        idx = idx[np.argsort(start[idx], kind="stable")]
        n_train = min(max(int(np.floor(TIME_TRAIN_SHARE * len(idx))), 1), len(idx) - 1)
        train[idx[:n_train]] = True
    return train


def credit(scores, y_true):
    """Per sample: 1/m if the true class is among the m classes with the top score, else 0."""
    top = scores.max(axis=1, keepdims=True)
    win = scores >= top - 1e-9 * np.maximum(1.0, np.abs(top))
    return win[np.arange(len(y_true)), y_true] / win.sum(axis=1)


def knn_votes(x_train, y_train, x_test, k, n_classes):
    """Tie-aware k-NN votes (n_test, n_classes); see the module docstring."""
    from sklearn.neighbors import KDTree

    uniq, inv = np.unique(x_train, axis=0, return_inverse=True)
    counts = np.zeros((len(uniq), n_classes))
    np.add.at(counts, (inv.ravel(), y_train), 1.0)
    per_point = counts.sum(axis=1)
    k = min(int(k), len(y_train))
    q = min(len(uniq), k + KNN_EXTRA)
    dist, ind = KDTree(uniq).query(x_test, k=q)
    cnt = per_point[ind]
    reach = np.argmax(np.cumsum(cnt, axis=1) >= k, axis=1)
    dk = dist[np.arange(len(dist)), reach][:, None]
    tol = 1e-9 * np.maximum(1.0, dk)
    inside = dist < dk - tol
    bound = np.abs(dist - dk) <= tol
    n_in = (cnt * inside).sum(axis=1, keepdims=True)
    n_b = (cnt * bound).sum(axis=1, keepdims=True)
    weight = inside + bound * ((k - n_in) / n_b)
    return np.einsum("mq,mqc->mc", weight, counts[ind])


def _forest_jobs(n_train):
    """joblib's n_jobs for a forest fitted on ``n_train`` samples."""
    return -1 if n_train >= FOREST_PARALLEL_FROM else 1


def forest_scores(x_train, y_train, x_test, n_classes, seed, n_estimators=100):
    """Class probabilities of a random forest, as (n_test, n_classes)."""
    from sklearn.ensemble import RandomForestClassifier

    rf = RandomForestClassifier(n_estimators=n_estimators, random_state=seed,
                                n_jobs=_forest_jobs(len(y_train)))
    rf.fit(x_train, y_train)
    out = np.zeros((len(x_test), n_classes))
    out[:, rf.classes_] = rf.predict_proba(x_test)
    return out


def evaluate(x, y, start, n_classes, split, scorer, seed):
    """Per-window credit and per-fold accuracies of ``scorer(xtr, ytr, xte)``."""
    got = np.zeros(len(y))
    fold_acc = []
    if split == "cv":
        fold = stratified_folds(y, N_FOLDS, seed)
        for f in range(N_FOLDS):
            te = fold == f
            if not te.any():
                continue
            got[te] = credit(scorer(x[~te], y[~te], x[te]), y[te])
            fold_acc.append(float(got[te].mean()))
        return got, np.ones(len(y), bool), fold_acc
    train = time_split(y, start)
    got[~train] = credit(scorer(x[train], y[train], x[~train]), y[~train])
    return got, ~train, fold_acc


# --- device identification -----------------------------------------------------------


class _Prepared:
    """Windows, class labels and eligibility for one (s, w): shared by every k."""

    def __init__(self, records, s, w, classes, drop_silent, attack):
        windows = F.Windows(records, w)
        samples = F.rate_samples(records, windows, s)
        if attack == "knn":
            x = F.knn_features(samples)
        else:
            x, _ = F.size_features(records, windows, s)
        silent = samples.sum(axis=1) == 0
        if classes == "device":
            names = np.array(records.devices, dtype=object)[windows.device]
        else:
            names = np.array([seg.name for seg in records.segments], dtype=object)[windows.segment]
        keep = ~silent if drop_silent else np.ones(len(silent), bool)
        self.excluded = list(records.excluded)
        all_names = sorted(set(names.tolist()))
        present = {records.devices[d] for d, _ in records.present} if classes == "device" else set()
        for dev in sorted(present - set(all_names)):
            self.excluded.append({"device": dev, "reason": "no whole %g-s window" % w})
        if classes == "device":
            for dev in sorted(set(records.devices) - present):
                self.excluded.append({"device": dev, "reason": "not in the selected captures"})
        counts = {nm: int(((names == nm) & keep).sum()) for nm in all_names}
        used = []
        for nm in all_names:
            if counts[nm] < N_FOLDS:
                why = "%d windows < %d folds" % (counts[nm], N_FOLDS)
                if drop_silent:
                    why += " (after dropping silent windows)"
                self.excluded.append({"device": nm, "reason": why})
            else:
                used.append(nm)
        keep &= np.isin(names, used)
        self.classes = used
        lut = {nm: i for i, nm in enumerate(used)}
        self.x = x[keep]
        self.y = np.array([lut[nm] for nm in names[keep].tolist()], dtype=np.int64)
        self.start = windows.start[keep]
        self.silent_used = int((silent & keep).sum())


def identify(records, s, w, k=None, split="cv", classes="device", drop_silent=False,
             attack="knn", seed=0, prepared=None):
    """Run one identification configuration; returns the result dict (one JSON line)."""
    if split not in SPLITS:
        raise UsageError("unknown split %r (choose cv or time)" % split)
    if classes not in CLASSES:
        raise UsageError("unknown classes %r (choose device or capture)" % classes)
    res = {"attack": attack, "s": s, "w": w}
    if attack == "knn":
        res["k"] = k
    res.update({"split": split, "view": records.view, "classes": classes,
                "drop_silent": bool(drop_silent), "tunnelled": bool(records.tunnelled)})
    if records.tunnelled:
        res.update({"devices": sorted(set(records.devices)), "windows": 0, "accuracy": None,
                    "chance": None, "chance_kind": "majority", "excluded": list(records.excluded),
                    "note": "tunnelled uplink: all traffic is one flow, so there is no per-device "
                            "traffic to identify; identification skipped (the event attack runs "
                            "on the aggregate)"})
        return res
    p = prepared or _Prepared(records, s, w, classes, drop_silent, attack)
    res.update({"devices": p.classes, "windows": len(p.y), "silent_windows": p.silent_used,
                "excluded": p.excluded})
    if len(p.classes) < 2:
        res.update({"accuracy": None, "chance": None, "chance_kind": "majority",
                    "note": "fewer than 2 %ss with at least %d windows" % (classes, N_FOLDS)})
        return res
    n_classes = len(p.classes)
    if attack == "knn":
        def scorer(xtr, ytr, xte):
            return knn_votes(xtr, ytr, xte, k, n_classes)
    else:
        def scorer(xtr, ytr, xte):
            return forest_scores(xtr, ytr, xte, n_classes, seed)
    got, tested, fold_acc = evaluate(p.x, p.y, p.start, n_classes, split, scorer, seed)
    y_t = p.y[tested]
    share = np.bincount(y_t, minlength=n_classes) / len(y_t)
    if split == "cv":
        chance = float(share.max())
    else:
        # the test share of the class most common in training (averaged over tied classes)
        train_counts = np.bincount(p.y[~tested], minlength=n_classes)
        chance = float(share[train_counts == train_counts.max()].mean())
    res.update({
        "accuracy": round(float(got[tested].mean()), 4),
        "fold_std": round(float(np.std(fold_acc)), 4) if fold_acc else None,
        "chance": round(chance, 4),
        "chance_kind": "majority",
        "chance_uniform": round(1.0 / n_classes, 4),
        "tested_windows": int(tested.sum()),
        "per_device": {nm: round(float(got[tested][y_t == i].mean()), 4)
                       for i, nm in enumerate(p.classes)},
    })
    return res


def identify_grid(records, attack="knn", s_values=GRID_S, w_values=GRID_W, k_values=GRID_K,
                  split="cv", classes="device", drop_silent=False, seed=0):
    """Yield one result per configuration; features are built once per (s, w)."""
    for s in s_values:
        for w in w_values:
            if w % s:
                continue
            prepared = None if records.tunnelled else _Prepared(
                records, s, w, classes, drop_silent, attack)
            for k in (k_values if attack == "knn" else (None,)):
                yield identify(records, s, w, k, split, classes, drop_silent, attack, seed,
                               prepared)


# --- behaviour inference -------------------------------------------------------------


def _devices_with_events(records, events, positive, background):
    out = set()
    for ev in events:
        if matches(ev.label, background) or (positive is not None
                                              and not matches(ev.label, positive)):
            continue
        if records.tunnelled or ev.device is None:
            return set(range(len(records.devices)))
        out |= {i for i, d in enumerate(records.devices) if ev.device in d.split("+")}
    return out


def infer_events(records, events, window=60.0, positive=None, background=None, seed=0,
                 n_estimators=100):
    """Event inference per device: one result dict per device that has events."""
    from .events import DEFAULT_BACKGROUND

    background = DEFAULT_BACKGROUND if background is None else background
    windows = F.Windows(records, window)
    x, names = F.rate_features(records, windows, 1.0 if window >= 1 else window)
    labels, hits = label_windows(windows, records, events, positive, background)
    with_events = _devices_with_events(records, events, positive, background)
    results = []
    for d, dev in enumerate(records.devices):
        mine = windows.device == d
        lab = labels[mine]
        n_pos, n_neg = int((lab == 1).sum()), int((lab == 0).sum())
        res = {"attack": "events", "device": dev, "window": window, "view": records.view,
               "tunnelled": bool(records.tunnelled), "windows": int(mine.sum()),
               "positive_windows": n_pos, "negative_windows": n_neg,
               "ambiguous_windows": int((lab == -1).sum()),
               "labels": sorted({lb for lb, hit in hits if (hit & mine).any()}),
               "features": names, "chance": 0.5}
        if n_pos == 0:
            if d in with_events:
                res.update({"balanced_accuracy": None, "roc_auc": None, "folds": 0,
                            "note": "its events overlap no whole %g-s window" % window})
                results.append(res)
            continue
        n_folds = min(N_FOLDS, n_pos, n_neg)
        if n_folds < 2:
            res.update({"balanced_accuracy": None, "roc_auc": None, "folds": n_folds,
                        "note": "too few positive or negative windows for cross-validation"})
            results.append(res)
            continue
        xs, ys = x[mine][lab >= 0], lab[lab >= 0]
        order = np.argsort(windows.start[mine][lab >= 0], kind="stable")
        res.update(forest_cv(xs[order], ys[order], n_folds, seed, n_estimators))
        results.append(res)
    return results


def balanced_accuracy_ci(got, ys, seed=0, n_boot=BOOT_N, level=CI_LEVEL):
    """(lo, hi, se) of the balanced accuracy of per-sample credits ``got`` (labels ``ys``).

    A stratified bootstrap: the positive and the negative samples are each
    resampled with replacement (``n_boot`` times, from ``seed``), and the
    interval is the central ``level`` share of the resampled balanced
    accuracies; ``se`` is their standard deviation. It covers the test
    windows' sampling, not the spread that cross-validation adds (folds trained
    on overlapping data, the forest's randomness) and treats windows as
    independent, so it is a little narrow: on pure noise about 80 % of these
    95 % intervals hold 0.5 (tests/test_lab_ci.py).
    """
    got, ys = np.asarray(got, dtype=np.float64), np.asarray(ys)
    pos, neg = got[ys == 1], got[ys == 0]
    if not len(pos) or not len(neg):
        return 0.0, 1.0, 0.5
    rng = np.random.default_rng([int(seed), len(pos), len(neg)])
    rp = pos[rng.integers(0, len(pos), (n_boot, len(pos)))].mean(axis=1)
    rn = neg[rng.integers(0, len(neg), (n_boot, len(neg)))].mean(axis=1)
    bal = 0.5 * (rp + rn)
    tail = 50.0 * (1.0 - level)
    lo, hi = np.percentile(bal, [tail, 100.0 - tail])
    return float(lo), float(hi), float(bal.std())


def forest_cv(xs, ys, n_folds, seed=0, n_estimators=100):
    """Binary random forest (balanced class weights) under stratified ``n_folds``-fold CV.

    ``ys`` holds 0/1 labels, samples in time order within each class. Returns
    balanced accuracy with its 95 % interval and standard error
    (:func:`balanced_accuracy_ci`) and ROC AUC of the out-of-fold predictions
    (ties in the class probabilities score as in :func:`credit`), recall,
    specificity, folds.
    """
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.metrics import roc_auc_score

    fold = stratified_folds(ys, n_folds, seed)
    proba = np.zeros(len(ys))
    for f in range(n_folds):
        te = fold == f
        rf = RandomForestClassifier(n_estimators=n_estimators, class_weight="balanced",
                                    random_state=seed, n_jobs=_forest_jobs(int((~te).sum())))
        rf.fit(xs[~te], ys[~te])
        p = rf.predict_proba(xs[te])
        proba[te] = p[:, list(rf.classes_).index(1)] if 1 in rf.classes_ else 0.0
    got = credit(np.column_stack([1.0 - proba, proba]), ys)
    bal = 0.5 * (got[ys == 1].mean() + got[ys == 0].mean())
    lo, hi, se = balanced_accuracy_ci(got, ys, seed)
    return {"balanced_accuracy": round(float(bal), 4),
            "balanced_accuracy_ci": [round(lo, 4), round(hi, 4)],
            "balanced_accuracy_se": round(se, 4),
            "roc_auc": round(float(roc_auc_score(ys, proba)), 4),
            "recall": round(float(got[ys == 1].mean()), 4),
            "specificity": round(float(got[ys == 0].mean()), 4),
            "folds": n_folds}
