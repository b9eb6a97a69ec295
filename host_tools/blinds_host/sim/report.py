"""``results.json`` and a self-contained ``report.html`` for a simulation."""

import datetime
import html
import json
import os

from . import curves, svg

VIEWS = ("wifi", "lastmile", "lastmile-dest")
VIEW_TITLES = {"wifi": "WiFi eavesdropper (per MAC)",
               "lastmile": "ISP, per local address",
               "lastmile-dest": "ISP, split by destination"}
DEFENSE_TITLES = {"none": "none (plain router)", "dns": "dns (hub, open)",
                  "allowlist": "allowlist (hub)"}


def _acc(analysis, view, attack):
    for r in analysis["attacks"]:
        if r["view"] == view and r["attack"] == attack:
            return r
    return {}


def _minus(a, b, digits=2):
    return None if a is None or b is None else round(a - b, digits)


def table(results):
    """Rows of the headline table: defense x view.

    Rates are per second of recording (see analysis); ``overhead_KBps`` is the
    last mile's (the home's internet link) and ``wlan_overhead_KBps`` the WiFi's,
    each minus the same under ``none``; ``events_ci``/``decoy_ci`` are the 95 %
    intervals of ``events``/``decoy``; ``added_p95_ms`` is per device class
    (p95 data delay in ms of recording minus the same under ``none``).
    """
    runs = results["runs"]
    base = runs.get("none")
    rows = []
    for defense, a in runs.items():
        lat, blat = a["latency"], base["latency"] if base else {}
        by_cls = a.get("latency_by_class") or {}
        base_cls = (base or {}).get("latency_by_class") or {}
        added = {c: _minus((by_cls.get(c) or {}).get("data_p95_ms"),
                           (base_cls.get(c) or {}).get("data_p95_ms"), 1)
                 for c in by_cls} if base else {c: None for c in by_cls}

        def over(view, a=a):
            if base is None:
                return None
            return round((a["overhead"][view]["Bps"] - base["overhead"][view]["Bps"]) / 1e3, 3)
        for view in VIEWS:
            knn, sizes = _acc(a, view, "knn"), _acc(a, view, "sizes")
            ev, dc = _acc(a, view, "events"), _acc(a, view, "decoy")
            ov_view = "wifi" if view == "wifi" else "lastmile"
            rows.append({
                "defense": defense, "view": view,
                "knn": knn.get("accuracy"), "sizes": sizes.get("accuracy"),
                "chance": knn.get("chance") if knn.get("chance") is not None else sizes.get("chance"),
                "windows": knn.get("windows"),
                "events": ev.get("balanced_accuracy"), "decoy": dc.get("balanced_accuracy"),
                "events_ci": ev.get("balanced_accuracy_ci"),
                "decoy_ci": dc.get("balanced_accuracy_ci"),
                "KBps": round(a["overhead"][ov_view]["Bps"] / 1000.0, 3),
                "overhead_KBps": over("lastmile"),
                "wlan_overhead_KBps": over("wifi"),
                "added_p95_ms": added,
                "setup_p95_ms": lat.get("setup_p95_ms"),
                "setup_added_p95_ms": _minus(lat.get("setup_p95_ms"), blat.get("setup_p95_ms")),
                "data_added_p95_ms": _minus(lat.get("data_p95_ms"), blat.get("data_p95_ms")),
                "dns_p95_ms": lat.get("dns_p95_ms"),
                "dns_added_p95_ms": _minus(lat.get("dns_p95_ms"), blat.get("dns_p95_ms")),
                "note": knn.get("note") or ev.get("note"),
            })
    return rows


def interrupted_note(results):
    """One sentence if the run was stopped before every defense finished, else None."""
    stop = results.get("interrupted")
    if not stop:
        return None
    return ("The run was interrupted (%s): these results cover the defenses that finished (%s); "
            "not run to the end: %s." % (stop["signal"], ", ".join(stop["finished"]) or "none",
                                         ", ".join(stop["not_finished"]) or "none"))


def with_ci(v, ci, d=2):
    """``0.61 [0.52-0.70]``: a balanced accuracy with its 95 % interval ("-" for none)."""
    if v is None:
        return "-"
    if not ci:
        return "%.*f" % (d, v)
    return "%.*f [%.*f-%.*f]" % (d, v, d, ci[0], d, ci[1])


def format_table(rows):
    head = ["defense", "view", "knn", "sizes", "chance", "events", "decoy", "KB/s",
            "uplink ovh KB/s", "WLAN ovh KB/s", "p95 added ms: interactive", "delay-tolerant",
            "set-up", "DNS"]

    def f(v, d=3):
        return "-" if v is None else ("%.*f" % (d, v) if isinstance(v, float) else str(v))
    body = [[r["defense"], r["view"], f(r["knn"]), f(r["sizes"]), f(r["chance"]),
             with_ci(r.get("events"), r.get("events_ci")),
             with_ci(r.get("decoy"), r.get("decoy_ci")),
             f(r["KBps"], 2), f(r["overhead_KBps"], 2), f(r.get("wlan_overhead_KBps"), 2),
             f((r.get("added_p95_ms") or {}).get("interactive"), 1),
             f((r.get("added_p95_ms") or {}).get("delay_tolerant"), 1),
             f(r.get("setup_added_p95_ms"), 1), f(r.get("dns_added_p95_ms"), 1)] for r in rows]
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h)
              for i, h in enumerate(head)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(b, widths)) for b in body]
    return "\n".join(lines)


def write(results, outdir):
    results["table"] = table(results)
    path_json = os.path.join(outdir, "results.json")
    with open(path_json, "w") as f:
        json.dump(results, f, indent=1)
    path_html = os.path.join(outdir, "report.html")
    with open(path_html, "w") as f:
        f.write(render(results))
    return path_json, path_html


def _e(x):
    return html.escape(str(x))


def _f(v, d=3):
    return "–" if v is None else ("%.*f" % (d, v) if isinstance(v, float) else _e(v))


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:24px auto;max-width:1000px;
color:#222;padding:0 16px;line-height:1.45}
h1{font-size:22px;margin-bottom:4px} h2{font-size:17px;margin-top:30px;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:13px;margin:8px 0}
td,th{padding:3px 9px;border-bottom:1px solid #eee;text-align:right}
th{background:#f5f5f5} td:first-child,th:first-child,td.l{text-align:left}
.good{color:#1a7f37;font-weight:600}.bad{color:#b42318;font-weight:600}
.muted{color:#777;font-size:12px} .key{margin-right:12px;font-size:12px;white-space:nowrap}
.sw{display:inline-block;width:11px;height:11px;margin-right:4px;vertical-align:-1px}
.grid{display:flex;flex-wrap:wrap;gap:8px} .card{border:1px solid #eee;border-radius:6px;padding:4px}
.big{font-size:15px} code{background:#f4f4f4;padding:0 3px}
"""


def render(r):
    devices = r["devices"]
    colors = {d["name"]: svg.PALETTE[i % len(svg.PALETTE)] for i, d in enumerate(devices)}
    runs = r["runs"]
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>Blinds: simulated home"
             "</title><style>%s</style></head><body>" % CSS]
    parts.append("<h1>Blinds: the simulated home</h1>")
    parts.append("<p class='muted'>%s &middot; source: <code>%s</code> &middot; %d devices &middot; "
                 "%g s of recording per defense at speed %g &middot; attacks on %g-s windows, "
                 "1-s samples, 10-fold cross-validation</p>" % (
                     _e(r["generated"]), _e(r["source"]), len(devices), r["duration"],
                     r["speed"], r["w"]))
    if interrupted_note(r):
        parts.append("<p class='bad'>%s</p>" % _e(interrupted_note(r)))
    parts.append(_summary(r))
    parts.append("<h2>Who can tell the devices apart?</h2>")
    parts.append("<p>Accuracy of identifying which device a window of traffic belongs to "
                 "(<b>knn</b>: Apthorpe et al.'s rate attack; <b>sizes</b>: packet sizes and "
                 "bursts, random forest). The dashed line is chance (always guessing the most "
                 "common device). Lower is better for the home.</p>")
    parts.append(_accuracy_chart(r))
    parts.append(_table_html(r))
    parts.append("<h2>Who can tell when something happens?</h2><p>Balanced accuracy of the "
                 "event attack (does this window hold a user event?) and of the decoy detector "
                 "(is this event real or a decoy?) per view; 0.5 is chance.</p>")
    parts.append(_events_chart(r))
    parts.append(curves.html(r))
    parts.append("<h2>What each observer sees over time</h2>")
    parts.append("<p>Bytes per second per device (log scale), as each observer attributes "
                 "them. " + svg.legend([(d["name"], colors[d["name"]]) for d in devices])
                 + "</p><div class='grid'>")
    for defense, a in runs.items():
        ser = a["series"]
        for view in ("wifi", "lastmile"):
            lines = [(name, ys, colors[name]) for name, ys in ser[view].items()]
            if view == "lastmile" and defense != "none":
                title = "%s: ISP, by destination (all from the hub)" % defense
            else:
                title = "%s: %s" % (defense, VIEW_TITLES[view])
            parts.append("<div class='card'>%s</div>" % svg.line_chart(
                lines, title=title, xlabel="seconds", unit=" B/s", log=True))
    parts.append("</div>")
    parts.append("<h2>What it costs</h2><div class='grid'>")
    parts.append("<div class='card'>%s</div>" % _overhead_chart(r))
    parts.append("<div class='card'>%s</div>" % _latency_chart(r))
    parts.append("</div>")
    parts.append(_cost_table(r))
    parts.append("<h2>How faithful is the replay?</h2>")
    parts.append(_fidelity(r, colors))
    parts.append("<h2>Details</h2>")
    parts.append(_details(r))
    parts.append("</body></html>")
    return "\n".join(parts)


def _summary(r):
    rows = r["table"]
    items = []
    for row in rows:
        if row["view"] == "lastmile" and row["defense"] != "none":
            continue
        items.append(row)
    best = {}
    for row in rows:
        if row["knn"] is not None:
            best.setdefault(row["defense"], []).append(row["knn"])
    txt = ["<p class='big'>"]
    base = [x for x in rows if x["defense"] == "none" and x["view"] == "wifi"]
    if base and base[0]["knn"] is not None:
        txt.append("Without a hub, the rate attack names the device of a window %.0f%% of the "
                   "time on the WiFi (chance %.0f%%). " % (100 * base[0]["knn"],
                                                           100 * (base[0]["chance"] or 0)))
    hub_lm = [x for x in rows if x["defense"] in ("dns", "allowlist")
              and x["view"] == "lastmile"]
    if hub_lm:
        txt.append("Behind the hub without a tunnel the ISP sees every stream leave from one "
                   "address, so it cannot split traffic per device by address; split by "
                   "destination it still can. ")
    tun = [x for x in rows if x["defense"].startswith("tunnel") and x["view"] == "lastmile"
           and x.get("events") is not None]
    if tun:
        best = min(tun, key=lambda x: x["events"])
        txt.append("Through the tunnel the ISP sees one flow; the event attack on it scores "
                   "%s at best for the home (%s, chance 0.5), at %.1f KB/s of uplink "
                   "overhead. " % (_e(with_ci(best["events"], best.get("events_ci"))),
                                   best["defense"], best["overhead_KBps"] or 0))
    txt.append("</p>")
    return "".join(txt)


def _accuracy_chart(r):
    groups, refs = [], {}
    keys = [("wifi", "knn", "#1f77b4"), ("wifi", "sizes", "#aec7e8"),
            ("lastmile", "knn", "#ff7f0e"), ("lastmile", "sizes", "#ffbb78"),
            ("lastmile-dest", "knn", "#2ca02c"), ("lastmile-dest", "sizes", "#98df8a")]
    for gi, (defense, a) in enumerate(r["runs"].items()):
        bars = []
        chance = None
        for view, attack, color in keys:
            res = _acc(a, view, attack)
            bars.append(("%s %s" % (view, attack), res.get("accuracy"), color))
            chance = chance if chance is not None else res.get("chance")
        groups.append((DEFENSE_TITLES.get(defense, defense), bars))
        refs[gi] = [(chance, "chance")]
    chart = svg.bar_chart(groups, width=820, height=250, title="Identification accuracy",
                          ymax=1.0, refs=refs, value_fmt=lambda v: "%.2f" % v)
    legend = svg.legend([("%s %s" % (v, a), c) for v, a, c in keys] + [("chance", "#000")])
    return "<div class='card'>%s<div>%s</div></div>" % (chart, legend)


def _events_chart(r):
    keys = [("wifi", "events", "#1f77b4"), ("lastmile", "events", "#ff7f0e"),
            ("lastmile-dest", "events", "#2ca02c"), ("wifi", "decoy", "#aec7e8"),
            ("lastmile", "decoy", "#ffbb78")]
    groups, refs = [], {}
    for gi, (defense, a) in enumerate(r["runs"].items()):
        groups.append((DEFENSE_TITLES.get(defense, defense), [
            ("%s %s" % (v, k), _acc(a, v, k).get("balanced_accuracy"), c) for v, k, c in keys]))
        refs[gi] = [(0.5, "chance")]
    chart = svg.bar_chart(groups, width=820, height=230, title="Events and decoys",
                          ymax=1.0, refs=refs, value_fmt=lambda v: "%.2f" % v)
    legend = svg.legend([("%s %s" % (v, k), c) for v, k, c in keys] + [("chance", "#000")])
    return "<div class='card'>%s<div>%s</div></div>" % (chart, legend)


def _table_html(r):
    out = ["<table><tr><th>defense</th><th>view</th><th>knn</th><th>sizes</th><th>chance</th>"
           "<th>events</th><th>decoy</th><th>windows</th><th>KB/s</th><th>uplink overhead KB/s"
           "</th><th>WLAN overhead KB/s</th><th>p95 added ms: interactive</th>"
           "<th>delay-tolerant</th><th>set-up</th><th>DNS</th><th class='l'>note</th></tr>"]
    for row in r["table"]:
        added = row.get("added_p95_ms") or {}
        cells = [_f(row["knn"]), _f(row["sizes"]), _f(row["chance"]),
                 _e(with_ci(row.get("events"), row.get("events_ci"))).replace("-", "–"),
                 _e(with_ci(row.get("decoy"), row.get("decoy_ci"))).replace("-", "–"),
                 _f(row["windows"]), _f(row["KBps"], 2),
                 _f(row["overhead_KBps"], 2), _f(row.get("wlan_overhead_KBps"), 2),
                 _f(added.get("interactive"), 1), _f(added.get("delay_tolerant"), 1),
                 _f(row.get("setup_added_p95_ms"), 1), _f(row.get("dns_added_p95_ms"), 1)]
        out.append("<tr><td>%s</td><td class='l'>%s</td>%s<td class='l muted'>%s</td></tr>"
                   % (_e(row["defense"]), _e(row["view"]),
                      "".join("<td>%s</td>" % c for c in cells), _e(row["note"] or "")))
    out.append("</table><p class='muted'>events: balanced accuracy of the event attack (chance "
               "0.5; mean over devices, or on the tunnel's one flow); decoy: balanced accuracy "
               "of telling real-event windows from the defense's decoys (chance 0.5); in "
               "brackets each one's 95 % interval (a stratified bootstrap over the test "
               "windows; over devices, from the mean's standard error). Rates are "
               "per second of recording. Overhead: bytes/s minus the same without a hub, on the "
               "last mile (uplink) and on the WiFi; added latency, per device class: p95 of the "
               "data delays in ms of recording, minus the same without a hub; set-up: p95 of a "
               "stream's set-up (connect, first byte "
               "up, first byte back) minus the same without a hub; data: p95 of the delay of "
               "every replayed packet's bytes (due time to arrival, both ways) minus the same "
               "without a hub; DNS: p95 of the time a device waits for its address (query to "
               "answer, cached or not) minus the same without a hub.</p>")
    return "".join(out)


def _overhead_chart(r):
    groups = []
    for defense, a in r["runs"].items():
        o = a["overhead"]
        groups.append((defense, [("WiFi", o["wifi"]["Bps"] / 1000, "#1f77b4"),
                                 ("last mile", o["lastmile"]["Bps"] / 1000, "#ff7f0e"),
                                 ("last mile, up", o["lastmile"]["up_Bps"] / 1000, "#ffbb78")]))
    chart = svg.bar_chart(groups, width=400, height=230, title="Traffic (KB/s, both ways)",
                          value_fmt=lambda v: "%.2f" % v)
    return chart + "<div>%s</div>" % svg.legend([("WiFi", "#1f77b4"), ("last mile", "#ff7f0e"),
                                                 ("last mile, uplink", "#ffbb78")])


def _latency_chart(r):
    groups = []
    for defense, a in r["runs"].items():
        lat = a["latency"]
        groups.append((defense, [("set-up p50", lat.get("setup_p50_ms"), "#9467bd"),
                                 ("set-up p95", lat.get("setup_p95_ms"), "#c5b0d5"),
                                 ("DNS p95", lat.get("dns_p95_ms"), "#8c564b"),
                                 ("data p95", lat.get("data_p95_ms"), "#17becf")]))
    chart = svg.bar_chart(groups, width=420, height=230, title="Latency (ms)",
                          value_fmt=lambda v: "%.1f" % v)
    return chart + "<div>%s</div>" % svg.legend([
        ("stream set-up p50", "#9467bd"), ("set-up p95", "#c5b0d5"), ("DNS p95", "#8c564b"),
        ("data event p95", "#17becf")])


def _cost_table(r):
    out = ["<table><tr><th>defense</th><th>WiFi KB/s</th><th>last mile KB/s</th>"
           "<th>uplink KB/s</th><th>set-up p50/p95 ms</th><th>DNS p50/p95 ms</th>"
           "<th>data down p95 ms</th><th>data up p95 ms</th><th>sessions ok</th>"
           "<th>bytes delivered up/down</th></tr>"]
    for defense, a in r["runs"].items():
        o, lat, s = a["overhead"], a["latency"], a["sessions"]
        out.append("<tr><td>%s</td><td>%.2f</td><td>%.2f</td><td>%.2f</td><td>%s / %s</td>"
                   "<td>%s / %s</td><td>%s</td><td>%s</td><td>%d / %d</td><td>%s / %s</td></tr>" % (
                       _e(defense), o["wifi"]["Bps"] / 1000, o["lastmile"]["Bps"] / 1000,
                       o["lastmile"]["up_Bps"] / 1000, _f(lat["setup_p50_ms"], 1),
                       _f(lat["setup_p95_ms"], 1), _f(lat["dns_p50_ms"], 1),
                       _f(lat["dns_p95_ms"], 1), _f(lat["down_p95_ms"], 1),
                       _f(lat["up_p95_ms"], 1), s["ok"], s["expected"],
                       _f(s["up_delivered"], 3), _f(s["down_delivered"], 3)))
    out.append("</table><p class='muted'>DNS without a hub is plaintext to the resolver; "
               "through the hub it is answered from the hub's cache or over DNS-over-TLS. "
               "Data delay: when an event's last byte arrives minus when it was due.</p>")
    return "".join(out)


def _fidelity(r, colors):
    out = ["<p>Correlation of each replayed device's 1-s byte rate on the WiFi with the "
           "recording's (goal &ge; 0.9). <i>all</i>: against every recorded packet; "
           "<i>TCP</i>: against the packets the replay carries.</p>"]
    out.append("<table><tr><th>device</th>" + "".join(
        "<th>%s all / TCP</th>" % _e(d) for d in r["runs"]) + "<th>bytes replayed / recorded "
        "(none)</th></tr>")
    for d in r["devices"]:
        cells = []
        for a in r["runs"].values():
            f = a["fidelity"].get(d["name"], {})
            c = f.get("corr")
            cls = "good" if c is not None and c >= 0.9 else "bad"
            cells.append("<td><span class='%s'>%s</span> / %s</td>" % (cls, _f(c), _f(
                f.get("corr_tcp"))))
        base = next(iter(r["runs"].values()))["fidelity"].get(d["name"], {})
        out.append("<tr><td>%s</td>%s<td>%s</td></tr>" % (_e(d["name"]), "".join(cells),
                                                         _f(base.get("byte_ratio"))))
    out.append("</table>")
    first = next(iter(r["runs"].items()), None)
    if first and "recorded_series" in r:
        defense, a = first
        out.append("<div class='grid'>")
        for d in r["devices"]:
            rec = r["recorded_series"].get(d["name"], [])
            rep = a.get("replay_series", a["series"]["wifi"]).get(d["name"], [])
            out.append("<div class='card'>%s</div>" % svg.line_chart(
                [("recorded", rec, "#999"), ("replayed (%s)" % defense, rep, colors[d["name"]])],
                width=300, height=160, title=d["name"], unit=" B/s"))
        out.append("</div><p>%s</p>" % svg.legend([("recorded", "#999"),
                                                  ("replayed, WiFi view", "#1f77b4")]))
    return "".join(out)


def _details(r):
    out = ["<table><tr><th>device</th><th>flows</th><th>sessions</th><th>recorded packets"
           "</th><th>replayed (TCP) packets</th><th>dropped: UDP</th><th>DNS</th><th>LAN</th>"
           "<th>other</th></tr>"]
    for d in r["devices"]:
        dr = d["dropped"]
        out.append("<tr><td>%s</td><td>%d</td><td>%d</td><td>%d</td><td>%d</td><td>%d (%d B)"
                   "</td><td>%d</td><td>%d</td><td>%d</td></tr>" % (
                       _e(d["name"]), d["flows"], d["sessions"], d["orig"]["packets"],
                       d["orig"]["tcp_packets"], dr["udp_packets"], dr["udp_bytes"],
                       dr["dns_packets"], dr["lan_packets"], dr["other_packets"]))
    out.append("</table><p class='muted'>The hub relays TCP streams and serves DNS and NTP; "
               "it forwards no other UDP, so UDP, multicast, ARP and LAN traffic are not "
               "replayed (counted here). DNS is replaced by the replayers' own lookups.</p>")
    for defense, a in r["runs"].items():
        s = a["sessions"]
        line = "<p class='muted'><b>%s</b>: sessions %d/%d ok" % (_e(defense), s["ok"],
                                                                  s["expected"])
        if s["errors"]:
            line += ", failures: " + ", ".join("%s %d" % (_e(k), v) for k, v in s["errors"].items())
        hub = a.get("hub")
        if hub:
            line += "; hub DNS %s; relay %s" % (
                _e(", ".join("%s %s" % kv for kv in hub["dns"].items())),
                _e(", ".join("%s %s" % (k, v) for k, v in hub["relay"].items()
                             if k in ("accepted", "relayed", "blocked", "no_name",
                                      "refused_device", "refused_budget", "connect_failed"))))
        line += "; captures: <code>%s</code>, <code>%s</code></p>" % (
            _e(a["pcaps"]["wifi"]), _e(a["pcaps"]["lastmile"]))
        out.append(line)
    for note in r.get("notes", []):
        out.append("<p class='muted'>note: %s</p>" % _e(note))
    return "".join(out)


def now():
    return datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
