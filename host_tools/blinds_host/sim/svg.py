"""A few inline-SVG charts for the report (no plotting library needed)."""

import html
import math

PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf")
FONT = 'font-family="system-ui, -apple-system, Segoe UI, sans-serif"'


def _esc(text):
    return html.escape(str(text), quote=True)


def nice_max(v):
    if not v or v <= 0:
        return 1.0
    exp = 10 ** math.floor(math.log10(v))
    for m in (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10):
        if m * exp >= v:
            return m * exp
    return 10 * exp


def fmt_num(v):
    if v == 0:
        return "0"
    if abs(v) >= 1e6:
        return "%gM" % round(v / 1e6, 2)
    if abs(v) >= 1e3:
        return "%gk" % round(v / 1e3, 2)
    if abs(v) < 1:
        return "%g" % round(v, 2)
    return "%g" % round(v, 1)


def _frame(width, height, title):
    out = ['<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" '
           'role="img" %s>' % (width, height, width, height, FONT)]
    out.append('<rect width="100%%" height="100%%" fill="white"/>')
    if title:
        out.append('<text x="%d" y="16" font-size="13" font-weight="600" fill="#222">%s</text>'
                   % (8, _esc(title)))
    return out


def _yaxis(out, x0, y0, x1, y1, ymax, unit=""):
    for k in range(5):
        v = ymax * k / 4
        y = y1 - (y1 - y0) * k / 4
        out.append('<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#e6e6e6"/>'
                   % (x0, y, x1, y))
        out.append('<text x="%.1f" y="%.1f" font-size="10" fill="#555" text-anchor="end">%s%s'
                   '</text>' % (x0 - 4, y + 3, fmt_num(v), unit if k == 4 else ""))


def _log_axis(out, x0, y0, x1, y1, decades, unit):
    for k in range(decades + 1):
        y = y1 - (y1 - y0) * k / decades
        out.append('<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#e6e6e6"/>'
                   % (x0, y, x1, y))
        out.append('<text x="%.1f" y="%.1f" font-size="10" fill="#555" text-anchor="end">%s%s'
                   '</text>' % (x0 - 4, y + 3, fmt_num(10 ** k) if k else "0",
                                unit if k == decades else ""))


def line_chart(series, width=460, height=190, title="", xlabel="", ymax=None, unit="",
               log=False):
    """``series``: [(label, ys, color)], xs = 0..n-1 (seconds). Returns SVG text.

    ``log``: a log10(1 + y) scale, so quiet devices show next to busy ones.
    """
    out = _frame(width, height, title)
    x0, y0, x1, y1 = 48, 26, width - 10, height - 34
    n = max((len(ys) for _, ys, _ in series), default=1)
    peak = max((max(ys) for _, ys, _ in series if len(ys)), default=1)
    if log:
        decades = max(int(math.ceil(math.log10(max(peak, 10) + 1))), 1)
        _log_axis(out, x0, y0, x1, y1, decades, unit)
        top = float(decades)
        series = [(lbl, [math.log10(1 + max(v, 0)) for v in ys], c) for lbl, ys, c in series]
    else:
        top = ymax or nice_max(peak)
        _yaxis(out, x0, y0, x1, y1, top, unit)
    for k in range(6):
        x = x0 + (x1 - x0) * k / 5
        out.append('<text x="%.1f" y="%.1f" font-size="10" fill="#555" text-anchor="middle">%s'
                   '</text>' % (x, y1 + 13, fmt_num(n * k / 5)))
    if xlabel:
        out.append('<text x="%.1f" y="%.1f" font-size="10" fill="#555" text-anchor="middle">%s'
                   '</text>' % ((x0 + x1) / 2, height - 4, _esc(xlabel)))
    for label, ys, color in series:
        if not len(ys):
            continue
        pts = " ".join("%.1f,%.1f" % (x0 + (x1 - x0) * i / max(n - 1, 1),
                                      y1 - (y1 - y0) * min(v / top, 1.05))
                       for i, v in enumerate(ys))
        out.append('<polyline fill="none" stroke="%s" stroke-width="1.3" points="%s">'
                   '<title>%s</title></polyline>' % (color, pts, _esc(label)))
    out.append('</svg>')
    return "\n".join(out)


def legend(items, width=460):
    """A one-line HTML legend: [(label, color)]."""
    return " ".join('<span class="key"><span class="sw" style="background:%s"></span>%s</span>'
                    % (c, _esc(lbl)) for lbl, c in items)


def bar_chart(groups, width=560, height=230, title="", ymax=None, unit="", refs=None,
              value_fmt=None):
    """Grouped bars. ``groups``: [(group label, [(bar label, value or None, color)])].

    ``refs``: optional {group index: [(value, label)]} dashed reference lines
    (e.g. chance) across that group's bars. None values are drawn as "n/a".
    """
    out = _frame(width, height, title)
    x0, y0, x1, y1 = 48, 26, width - 10, height - 40
    vals = [v for _, bars in groups for _, v, _ in bars if v is not None]
    top = ymax or nice_max(max(vals, default=1))
    _yaxis(out, x0, y0, x1, y1, top, unit)
    fmt = value_fmt or fmt_num
    gw = (x1 - x0) / max(len(groups), 1)
    for gi, (glabel, bars) in enumerate(groups):
        gx = x0 + gi * gw
        bw = (gw * 0.8) / max(len(bars), 1)
        for bi, (blabel, v, color) in enumerate(bars):
            bx = gx + gw * 0.1 + bi * bw
            if v is None:
                out.append('<text x="%.1f" y="%.1f" font-size="9" fill="#999" '
                           'text-anchor="middle">n/a</text>' % (bx + bw / 2, y1 - 3))
                continue
            h = (y1 - y0) * min(max(v, 0) / top, 1.0)
            out.append('<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s">'
                       '<title>%s: %s</title></rect>' % (bx + 1, y1 - h, max(bw - 2, 1), h, color,
                                                          _esc(blabel), fmt(v)))
            if bw >= 18:
                out.append('<text x="%.1f" y="%.1f" font-size="9" fill="#333" '
                           'text-anchor="middle">%s</text>' % (bx + bw / 2, y1 - h - 3, fmt(v)))
        for v, label in (refs or {}).get(gi, ()):
            if v is None:
                continue
            y = y1 - (y1 - y0) * min(v / top, 1.0)
            out.append('<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#000" '
                       'stroke-dasharray="4,3" stroke-width="1.2"><title>%s %s</title></line>'
                       % (gx + gw * 0.08, y, gx + gw * 0.92, y, _esc(label), fmt(v)))
        out.append('<text x="%.1f" y="%.1f" font-size="11" fill="#222" text-anchor="middle">%s'
                   '</text>' % (gx + gw / 2, y1 + 15, _esc(glabel)))
    out.append('</svg>')
    return "\n".join(out)


def xy_chart(series, width=520, height=300, title="", xlabel="", ylabel="", xlog=(-2, 2),
             ymax=1.0, xrefs=(), yrefs=()):
    """Points joined per series on a log10 x axis (``xlog``: first and last decade).

    ``series``: [(label, [(x, y, tip)], color)]; x <= 0 is drawn at the left edge.
    ``xrefs``/``yrefs``: [(value, label)] dashed reference lines (published points, goals).
    """
    out = _frame(width, height, title)
    x0, y0, x1, y1 = 48, 26, width - 12, height - 40
    lo, hi = xlog

    def px(x):
        lx = math.log10(x) if x and x > 0 else lo
        return x0 + (x1 - x0) * (min(max(lx, lo), hi) - lo) / (hi - lo)

    def py(y):
        return y1 - (y1 - y0) * min(max(y, 0.0), ymax) / ymax
    _yaxis(out, x0, y0, x1, y1, ymax)
    for d in range(lo, hi + 1):
        x = px(10 ** d)
        out.append('<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#eee"/>'
                   '<text x="%.1f" y="%.1f" font-size="10" fill="#555" text-anchor="middle">%s'
                   '</text>' % (x, y0, x, y1, x, y1 + 13, fmt_num(10 ** d)))
    if xlabel:
        out.append('<text x="%.1f" y="%.1f" font-size="10" fill="#555" text-anchor="middle">%s'
                   '</text>' % ((x0 + x1) / 2, height - 12, _esc(xlabel)))
    if ylabel:
        out.append('<text x="10" y="%.1f" font-size="10" fill="#555" transform="rotate(-90 10 '
                   '%.1f)" text-anchor="middle">%s</text>' % ((y0 + y1) / 2, (y0 + y1) / 2,
                                                              _esc(ylabel)))
    for v, label in xrefs:
        x = px(v)
        out.append('<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#888" '
                   'stroke-dasharray="3,3"><title>%s</title></line><text x="%.1f" y="%.1f" '
                   'font-size="9" fill="#666" transform="rotate(-90 %.1f %.1f)">%s</text>'
                   % (x, y0, x, y1, _esc(label), x - 2, y1 - 4, x - 2, y1 - 4, _esc(label)))
    for v, label in yrefs:
        y = py(v)
        out.append('<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#000" '
                   'stroke-dasharray="5,3"><title>%s</title></line><text x="%.1f" y="%.1f" '
                   'font-size="9" fill="#333">%s</text>' % (x0, y, x1, y, _esc(label), x0 + 4,
                                                            y - 3, _esc(label)))
    for label, pts, color in series:
        pts = sorted(p for p in pts if p[1] is not None and p[0] is not None)
        if len(pts) > 1:
            out.append('<polyline fill="none" stroke="%s" stroke-width="1.5" points="%s"/>' % (
                color, " ".join("%.1f,%.1f" % (px(x), py(y)) for x, y, _ in pts)))
        for x, y, tip in pts:
            out.append('<circle cx="%.1f" cy="%.1f" r="3.5" fill="%s"><title>%s: %s</title>'
                       '</circle>' % (px(x), py(y), color, _esc(label), _esc(tip)))
    out.append('</svg>')
    return "\n".join(out)
