"""Windows over the records and the features computed on each window.

A *window* is a consecutive, non-overlapping ``w``-second stretch of one segment
(capture) for one device present in it, starting at the segment's first packet.
Only whole windows are used: the tail of a segment shorter than ``w`` is dropped.
A window in which the device sent and received nothing is *silent*; it is kept
(its features are zeros) unless the caller drops it.

Everything is vectorized: records are mapped to a global window (or sample)
index and summed with ``np.bincount``.
"""

import numpy as np

from ..errors import UsageError

# Frame-length bin edges (bytes) for the packet-size histograms: fine where IoT
# control traffic lives (ACKs, keep-alives, small TLS records), coarse above.
SIZE_EDGES = (0, 55, 61, 67, 75, 91, 111, 131, 151, 201, 301, 401, 601, 801, 1001, 1201, 1401,
              1501)
BURST_GAP_S = 1.0   # packets closer than this belong to one burst
FAST_GAP_S = 0.01   # inter-arrival below this counts as back-to-back


class Windows:
    """The window grid for a window length ``w``: one entry per window.

    ``device``, ``segment`` and ``start`` (epoch s) are numpy arrays; ``pair_keys``
    (sorted ``device * n_segments + segment``), ``pair_base`` and ``pair_count``
    describe the (device, segment) blocks.
    """

    def __init__(self, records, w):
        if not w > 0:
            raise UsageError("window length must be positive, got %r" % w)
        self.w = float(w)
        self.n_segments = max(len(records.segments), 1)
        pairs = records.present
        seg_start = np.array([s.start for s in records.segments], dtype=np.float64)
        seg_end = np.array([s.end for s in records.segments], dtype=np.float64)
        if len(pairs):
            keys = pairs[:, 0] * self.n_segments + pairs[:, 1]
            order = np.argsort(keys, kind="stable")
            pairs, keys = pairs[order], keys[order]
            dur = seg_end[pairs[:, 1]] - seg_start[pairs[:, 1]]
            count = np.floor(dur / self.w + 1e-9).astype(np.int64)
            count = np.maximum(count, 0)
        else:
            keys = np.zeros(0, np.int64)
            count = np.zeros(0, np.int64)
        self.pair_keys = keys
        self.pair_count = count
        self.pair_base = np.concatenate([[0], np.cumsum(count)[:-1]]).astype(np.int64)
        n = int(count.sum())
        self.n = n
        pair_of = np.repeat(np.arange(len(keys)), count)
        within = np.arange(n) - np.repeat(self.pair_base, count)
        self.device = pairs[pair_of, 0] if n else np.zeros(0, np.int64)
        self.segment = pairs[pair_of, 1] if n else np.zeros(0, np.int64)
        self.start = (seg_start[self.segment] + within * self.w) if n else np.zeros(0)
        self._seg_start = seg_start

    def __len__(self):
        return self.n

    def locate(self, records, step):
        """Per record: (pair index or -1, index of its ``step``-second bin from segment start)."""
        keys = records.device * self.n_segments + records.segment
        if len(self.pair_keys):
            pos = np.clip(np.searchsorted(self.pair_keys, keys), 0, len(self.pair_keys) - 1)
            pair = np.where(self.pair_keys[pos] == keys, pos, -1)
        else:
            pair = np.full(len(keys), -1, np.int64)
        rel = records.ts - self._seg_start[records.segment] if len(keys) else np.zeros(0)
        return pair, np.floor(rel / step + 1e-9).astype(np.int64)

    def window_of(self, records):
        """Global window index of each record, -1 if it falls outside every window."""
        pair, local = self.locate(records, self.w)
        if not len(self.pair_keys):
            return np.full(len(pair), -1, np.int64)
        safe = np.maximum(pair, 0)
        ok = (pair >= 0) & (local >= 0) & (local < self.pair_count[safe])
        return np.where(ok, self.pair_base[safe] + local, -1)


def samples_per_window(s, w):
    """w / s as an integer; UsageError unless w is a whole multiple of s."""
    if not s > 0:
        raise UsageError("sample length s must be positive, got %r" % s)
    m = w / s
    if abs(m - round(m)) > 1e-9 or round(m) < 1:
        raise UsageError("window length w=%g must be a whole multiple of s=%g" % (w, s))
    return round(m)


def rate_samples(records, windows, s):
    """(n_windows, w/s) matrix of bytes per ``s``-second sample."""
    m = samples_per_window(s, windows.w)
    pair, local = windows.locate(records, s)
    if not len(windows.pair_keys):
        return np.zeros((0, m))
    safe = np.maximum(pair, 0)
    ok = (pair >= 0) & (local >= 0) & (local < windows.pair_count[safe] * m)
    idx = windows.pair_base[safe[ok]] * m + local[ok]
    flat = np.bincount(idx, weights=records.nbytes[ok].astype(np.float64),
                       minlength=windows.n * m)
    return flat.reshape(windows.n, m)


def knn_features(samples):
    """The paper's features: mean and (population) standard deviation of the samples."""
    return np.column_stack([samples.mean(axis=1), samples.std(axis=1)])


def _sum(idx, weights, n):
    return np.bincount(idx, weights=weights, minlength=n).astype(np.float64)


def _safe_div(a, b):
    return np.divide(a, b, out=np.zeros_like(a, dtype=np.float64), where=b > 0)


def rate_features(records, windows, s=1.0):
    """Rate features per window for event inference; returns (matrix, column names).

    Bytes and packets in each direction, mean/std/max of the ``s``-second byte
    rates, the fraction of active samples, mean and largest frame, number of
    distinct remote addresses and of bursts.
    """
    cols = {}
    samples = rate_samples(records, windows, s)
    cols["rate_mean"] = samples.mean(axis=1)
    cols["rate_std"] = samples.std(axis=1)
    cols["rate_max"] = samples.max(axis=1) if samples.shape[1] else np.zeros(windows.n)
    cols["active_frac"] = (samples > 0).mean(axis=1)
    cols.update(_packet_columns(records, windows, histograms=False))
    names = list(cols)
    return np.column_stack([cols[k] for k in names]), names


def size_features(records, windows, s):
    """Packet-size and burst features per window (the stronger attacker); (matrix, names).

    The k-NN rate features (mean, std of ``s``-second samples, plus max and the
    fraction of active samples), packet and byte counts per direction, the
    distribution of frame lengths (fractions per ``SIZE_EDGES`` bin, overall,
    out and in), the most common length and its share, number of distinct
    lengths, bursts (count; mean and max packets, bytes and duration) and
    inter-arrival statistics.
    """
    cols = {}
    samples = rate_samples(records, windows, s)
    cols["rate_mean"] = samples.mean(axis=1)
    cols["rate_std"] = samples.std(axis=1)
    cols["rate_max"] = samples.max(axis=1)
    cols["active_frac"] = (samples > 0).mean(axis=1)
    cols.update(_packet_columns(records, windows, histograms=True))
    names = list(cols)
    return np.column_stack([cols[k] for k in names]), names


def _packet_columns(records, windows, histograms):
    n = windows.n
    win = windows.window_of(records)
    ok = win >= 0
    win, ts = win[ok], records.ts[ok]
    size = records.nbytes[ok].astype(np.float64)
    direction = records.direction[ok]
    remote = records.remote[ok]
    out, inn = direction > 0, direction < 0
    cols = {}
    pkts = _sum(win, None, n)
    cols["pkts"] = pkts
    cols["pkts_out"] = _sum(win[out], None, n)
    cols["pkts_in"] = _sum(win[inn], None, n)
    cols["bytes_out"] = _sum(win[out], size[out], n)
    cols["bytes_in"] = _sum(win[inn], size[inn], n)
    cols["size_mean"] = _safe_div(_sum(win, size, n), pkts)
    size_max = np.zeros(n)
    np.maximum.at(size_max, win, size)
    cols["size_max"] = size_max
    has_remote = remote >= 0
    if has_remote.any():
        pairs = np.unique(np.stack([win[has_remote], remote[has_remote]], axis=1), axis=0)
        cols["remotes"] = _sum(pairs[:, 0], None, n)
    else:
        cols["remotes"] = np.zeros(n)

    # Bursts and inter-arrival times, on records sorted by (window, time).
    order = np.lexsort((ts, win))
    win_s, ts_s, size_s = win[order], ts[order], size[order]
    same = np.zeros(len(win_s), dtype=bool)
    same[1:] = win_s[1:] == win_s[:-1]
    gap = np.zeros(len(ts_s))
    gap[1:] = np.diff(ts_s)
    new_burst = ~same | (gap > BURST_GAP_S)
    burst_id = np.cumsum(new_burst) - 1
    n_bursts = int(burst_id[-1]) + 1 if len(burst_id) else 0
    b_win = win_s[new_burst]
    b_pkts = np.bincount(burst_id, minlength=n_bursts).astype(np.float64)
    b_bytes = np.bincount(burst_id, weights=size_s, minlength=n_bursts)
    b_first = ts_s[new_burst]
    b_last = np.zeros(n_bursts)
    np.maximum.at(b_last, burst_id, ts_s)
    b_dur = b_last - b_first
    nb = _sum(b_win, None, n)
    cols["bursts"] = nb
    if histograms:
        cols["burst_pkts_mean"] = _safe_div(_sum(b_win, b_pkts, n), nb)
        cols["burst_bytes_mean"] = _safe_div(_sum(b_win, b_bytes, n), nb)
        cols["burst_dur_mean"] = _safe_div(_sum(b_win, b_dur, n), nb)
        for name, vals in (("burst_pkts_max", b_pkts), ("burst_bytes_max", b_bytes),
                           ("burst_dur_max", b_dur)):
            col = np.zeros(n)
            np.maximum.at(col, b_win, vals)
            cols[name] = col
        g_win, g = win_s[same], gap[same]
        ng = _sum(g_win, None, n)
        g_mean = _safe_div(_sum(g_win, g, n), ng)
        g_sq = _safe_div(_sum(g_win, g * g, n), ng)
        cols["iat_mean"] = g_mean
        cols["iat_std"] = np.sqrt(np.maximum(g_sq - g_mean * g_mean, 0.0))
        g_max = np.zeros(n)
        np.maximum.at(g_max, g_win, g)
        cols["iat_max"] = g_max
        cols["iat_fast_frac"] = _safe_div(_sum(g_win[g < FAST_GAP_S], None, n), ng)

        edges = np.asarray(SIZE_EDGES, dtype=np.float64)
        nbins = len(edges)
        b = np.searchsorted(edges, size, side="right") - 1
        for tag, sel in (("all", np.ones(len(win), bool)), ("out", out), ("in", inn)):
            denom = pkts if tag == "all" else cols["pkts_" + tag]
            hist = np.bincount(win[sel] * nbins + b[sel], minlength=n * nbins)
            hist = hist.reshape(n, nbins).astype(np.float64)
            frac = _safe_div(hist, denom[:, None] * np.ones((1, nbins)))
            for j in range(nbins):
                cols["size_%s_%d" % (tag, int(edges[j]))] = frac[:, j]
        # Most common frame length and its share; number of distinct lengths.
        key = np.unique(np.stack([win, size.astype(np.int64)], axis=1), axis=0,
                        return_counts=True)
        (kw, ksize), kcount = key[0].T, key[1].astype(np.float64)
        cols["sizes_distinct"] = _sum(kw, None, n)
        mode_count = np.zeros(n)
        np.maximum.at(mode_count, kw, kcount)
        is_mode = kcount == mode_count[kw]
        mode_size = np.zeros(n)
        # Ties: the smallest most-common length (sorted order, first wins).
        first = np.flatnonzero(is_mode)
        first = first[np.r_[True, kw[first][1:] != kw[first][:-1]]] if len(first) else first
        mode_size[kw[first]] = ksize[first]
        cols["size_mode"] = mode_size
        cols["size_mode_frac"] = _safe_div(mode_count, pkts)
    return cols
