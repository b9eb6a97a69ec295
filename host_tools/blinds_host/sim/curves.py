"""Cost-privacy curves: each shaper at several settings, next to the published points.

``blinds sim --curves`` (and ``python -m blinds_host.bench --only curves``) runs
``grid_defenses()``: the baseline, the bare tunnel, and each shaper at
``len(GRID[kind])`` settings. The report then draws, per shaper, the events
attack's balanced accuracy on the last mile (the home's one tunnelled flow)
and the decoy detector's, against the uplink overhead, with:

- the published costs as vertical lines (``PUBLISHED``): constant-rate padding
  (~40 KB/s per home), the device-side library of Datta et al. 2018 (~4 KB/s),
  NetShaper (Sabzi et al., USENIX Security 2024: about 1000 times less than
  constant rate); STP (Apthorpe et al., PETS 2019) is our own ``stp`` curve,
  run here on the same home;
- the goals of issue 9 and Engelberg & Wool's 81 % cover/real detector as
  horizontal lines.

Only costs are drawn for the published defenses: their privacy figures come
from other homes and other attacks, so they are not put on our y axis.
"""

from . import svg

# Settings in recording time (see defenses.py), cheapest last; each holds the
# kind's default (constant 10 ms, stp q 0.03, adaptive 3000 B/s) as its plain name.
GRID = {
    "constant": ["tunnel+constant", "tunnel+constant:interval_ms=20",
                 "tunnel+constant:interval_ms=40"],
    "stp": ["tunnel+stp:q=0.1", "tunnel+stp", "tunnel+stp:q=0.01"],
    "adaptive": ["tunnel+adaptive:budget_Bps=4000", "tunnel+adaptive",
                 "tunnel+adaptive:budget_Bps=1500"],
}
COVERED = ["tunnel+adaptive+cover"]
COLORS = {"constant": "#d62728", "stp": "#ff7f0e", "adaptive": "#2ca02c", "cover": "#9467bd"}
PUBLISHED = [
    (40.0, "constant rate ~40 KB/s"),
    (4.0, "Datta et al. 2018 ~4 KB/s"),
    (0.04, "NetShaper ~1/1000 of constant"),
]
GOALS = {"events": [(0.5, "chance"), (0.55, "goal adaptive 0.55"), (0.60, "goal stp 0.60")],
         "decoy": [(0.5, "chance"), (0.60, "goal 0.60"),
                   (0.81, "Engelberg & Wool 81 %")]}


GOALS_9 = [  # issue 9: (view, defense kind, measure, goal): the measure must be <= goal
    ("lastmile", "constant", "events", 0.52), ("lastmile", "stp", "events", 0.60),
    ("lastmile", "adaptive", "events", 0.55), ("lastmile", "adaptive", "overhead_KBps", 4.0),
    ("lastmile", "adaptive", "added_interactive_ms", 200.0),
    ("lastmile", "*", "decoy", 0.60), ("wifi", "cover", "events", 0.60),
    ("wifi", "cover", "knn_above_chance", 0.15),
]


def goals_table(table):
    """Issue 9's goals from a results table: [{view, kind, measure, value, goal, met}]."""
    out = []
    for view, kind, measure, goal in GOALS_9:
        vals = []
        for row in table:
            k = kind_of(row["defense"])
            if row["view"] != view or k is None or (kind != "*" and k != kind):
                continue
            if measure == "added_interactive_ms":
                v = (row.get("added_p95_ms") or {}).get("interactive")
            elif measure == "knn_above_chance":
                v = None if row["knn"] is None else round(row["knn"] - row["chance"], 4)
            else:
                v = row.get(measure)
            if v is not None:
                vals.append((v, row["defense"]))
        worst = max(vals) if vals else (None, None)
        out.append({"view": view, "kind": kind, "measure": measure, "value": worst[0],
                    "defense": worst[1], "goal": "<= %g" % goal,
                    "met": None if worst[0] is None else worst[0] <= goal})
    return out


def grid_defenses(kinds=None):
    """The defenses of the curve grid (labels)."""
    out = ["none", "tunnel"]
    for kind, labels in GRID.items():
        if kinds is None or kind in kinds:
            out += labels
    return out + (COVERED if kinds is None or "cover" in kinds else [])


def kind_of(label):
    """The shaper kind of a defense label ('cover' for a +cover defense), or None."""
    name = label.split(":", 1)[0]
    if "+cover" in name:
        return "cover"
    for kind in GRID:
        if name == "tunnel+" + kind:
            return kind
    return None


def points(table, measure, view="lastmile"):
    """{kind: [(overhead KB/s, value, label)]} from results' table rows."""
    out = {}
    for row in table:
        kind = kind_of(row["defense"])
        want = "wifi" if kind == "cover" else view
        if kind is None or row["view"] != want:
            continue
        cost = row["wlan_overhead_KBps"] if kind == "cover" else row["overhead_KBps"]
        out.setdefault(kind, []).append((cost, row.get(measure), row["defense"]))
    return out


def html(results):
    """The curves section of the report ('' when no shaper ran)."""
    table = results.get("table") or []
    parts = []
    for measure, title in (("events", "Events attack on the last mile (balanced accuracy)"),
                           ("decoy", "Decoy detector (balanced accuracy)")):
        pts = points(table, measure)
        if not pts:
            continue
        series = [(kind, [(x, y, "%s: %.2f KB/s, %s" % (lbl, x or 0, y)) for x, y, lbl in p],
                   COLORS.get(kind, "#333")) for kind, p in sorted(pts.items())]
        parts.append("<div class='card'>%s</div>" % svg.xy_chart(
            series, title=title, xlog=(-2, 3), xlabel="overhead KB/s (uplink; WLAN for +cover), log scale",
            xrefs=PUBLISHED, yrefs=GOALS[measure]))
    if not parts:
        return ""
    rows = "".join("<tr><td class='l'>%s</td><td class='l'>%s</td><td class='l'>%s</td>"
                   "<td>%s</td><td>%s</td><td class='l'>%s</td></tr>" % (
                       g["view"], g["kind"], g["measure"],
                       "–" if g["value"] is None else "%.3f" % g["value"], g["goal"],
                       {True: "<span class='good'>met</span>", False: "<span class='bad'>not "
                        "met</span>", None: "not measured"}[g["met"]])
                   for g in goals_table(table))
    parts.append("<div class='card'><table><tr><th>view</th><th>shaper</th><th>measure</th>"
                 "<th>value (worst setting)</th><th>goal</th><th>status</th></tr>%s</table>"
                 "</div>" % rows)
    legend = svg.legend([(k, c) for k, c in COLORS.items()])
    return ("<h2>Cost and privacy per shaper</h2><p>Each point is one setting of a shaper "
            "(hover for its label); dashed vertical lines are published costs, horizontal "
            "ones the goals, chance and Engelberg &amp; Wool's detector. Lower and further "
            "left is better.</p><div class='grid'>%s</div><p>%s</p>" % ("".join(parts), legend))
