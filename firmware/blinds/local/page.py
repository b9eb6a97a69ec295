# The control page's HTML: self-contained (inline style and a few lines of
# inline script, no external scripts or fonts), so it works with no Internet.
# Built as a list of small strings: no one large string on the heap.
import gc

from blinds.local.http import esc

_STYLE = ("<style>body{font:15px sans-serif;margin:1em;max-width:60em;color:#222}"
          "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;"
          "padding:.25em .5em;text-align:left}th{background:#eee}h2{margin:1em 0 .3em}"
          "form{display:inline}button{margin:.1em .2em;padding:.3em .8em}"
          ".on{color:#070;font-weight:bold}.muted{color:#777}</style>")
_HEAD = ('<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
         '<meta name="viewport" content="width=device-width,initial-scale=1">'
         '<link rel="icon" href="data:,"><title>Blinds hub</title>')
# Every 2 s the values are fetched again and the cells that show them updated.
_SCRIPT = ("<script>function upd(){fetch('/values',{credentials:'same-origin'})"
           ".then(function(r){return r.json()}).then(function(d){"
           "document.querySelectorAll('[data-topic]').forEach(function(e){"
           "var v=d.values[e.getAttribute('data-topic')];"
           "if(v){e.textContent=e.hasAttribute('data-age')?v[1]+' s ago':v[0]}})})"
           ".catch(function(){})}setInterval(upd,2000);</script>")


def _ago(now, t):
    if not t:
        return "never"
    d = int(now - t)
    return "%d s ago" % d if d < 120 else "%d min ago" % (d // 60)


def login(token, msg):
    out = [_HEAD, _STYLE, "</head><body><h1>Blinds hub</h1>"]
    if msg:
        out.append('<p class="muted" id="msg">%s</p>' % esc(msg))
    out.append('<form method="post" action="/login"><input type="hidden" name="csrf" value="%s">'
               '<label>Admin password <input type="password" name="password" id="password" '
               'autocomplete="current-password" autofocus></label> '
               '<button type="submit" id="login">Log in</button></form></body></html>'
               % esc(token))
    return out


def _csrf(token):
    return '<input type="hidden" name="csrf" value="%s">' % esc(token)


def main(ctl, token):
    hub = ctl.hub
    now = int(ctl.board.time_s())
    vals = ctl.values.t
    out = [_HEAD, _STYLE, _SCRIPT, "</head><body><h1>Blinds hub</h1>"]
    out.append('<form method="post" action="/logout">%s<button id="logout">Log out</button>'
               '</form>' % _csrf(token))
    # Quick commands: the switches and buttons of the discovery config.
    if ctl.quick and ctl.broker is not None:
        out.append("<h2>Controls</h2><table><tr><th>device</th><th>entity</th><th>state</th>"
                   "<th></th></tr>")
        for dev, e in ctl.quick:
            st = e.get("state_topic")
            v = vals.get(st) if st else None
            out.append('<tr><td>%s</td><td>%s</td><td data-topic="%s" class="state">%s</td><td>'
                       % (esc(dev), esc(e.get("name") or e["object_id"]), esc(st or ""),
                          esc(v[0]) if v else "?"))
            if e["component"] == "switch":
                cmds = (e.get("payload_on", "ON"), e.get("payload_off", "OFF"))
            else:
                cmds = (e.get("payload_press", "PRESS"),)
            for c in cmds:
                out.append('<form method="post" action="/publish">%s<input type="hidden" '
                           'name="topic" value="%s"><input type="hidden" name="payload" '
                           'value="%s"><button class="cmd" data-cmd="%s %s">%s</button></form>'
                           % (_csrf(token), esc(e["command_topic"]), esc(c),
                              esc(e["command_topic"]), esc(c), esc(c)))
            out.append("</td></tr>")
        out.append("</table>")
    if ctl.broker is not None:
        out.append('<h2>Send a command</h2><form method="post" action="/publish">%s'
                   '<input name="topic" id="topic" placeholder="cmnd/plug/POWER" size="24"> '
                   '<input name="payload" id="payload" placeholder="ON" size="10"> '
                   '<label><input type="checkbox" name="retain" value="1"> retain</label> '
                   '<button id="send">Publish</button></form>' % _csrf(token))
    out.append("<h2>Topics</h2><table id=\"values\"><tr><th>topic</th><th>last value</th>"
               "<th>when</th></tr>")
    for k in sorted(vals):
        v = vals[k]
        out.append('<tr><td>%s</td><td data-topic="%s">%s</td><td data-topic="%s" data-age>%s'
                   '</td></tr>' % (esc(k), esc(k), esc(v[0]), esc(k), _ago(now, v[1])))
    out.append("</table>")
    if hub.devices is not None:
        out.append("<h2>Devices</h2><table id=\"devices\"><tr><th>name</th><th>MAC</th>"
                   "<th>policy</th><th>last seen</th><th>streams</th></tr>")
        for d in hub.devices.status()["devices"]:
            out.append("<tr><td>%s</td><td>%s</td><td>%s</td><td>%s</td><td>%d</td></tr>"
                       % (esc(d["name"]), esc(d["mac"]), esc(d["policy"]),
                          _ago(now, d["last_seen_s"]), d["streams"]))
        out.append("</table>")
    out.append("<h2>Recently blocked</h2><table id=\"blocked\"><tr><th>when</th><th>device</th>"
               "<th>what</th><th>why</th></tr>")
    for t, dev, what, why, count in ctl.blocked():
        out.append("<tr><td>%s</td><td>%s</td><td>%s</td><td>%s%s</td></tr>"
                   % (_ago(now, t), esc(dev), esc(what), esc(why),
                      " (%d times)" % count if count > 1 else ""))
    out.append("</table>")
    out.append("<h2>Hub</h2><table id=\"hub\">")
    rows = [("state", hub.state), ("uptime", "%d s" % int(now - hub.started_s)),
            ("heap free", "%d bytes" % gc.mem_free() if hasattr(gc, "mem_free") else "?")]
    if hub.mqtt is not None:
        m = hub.mqtt.status()
        rows.append(("MQTT clients", "%d (%d sessions)" % (m["clients"], m["sessions"])))
    if hub.relay is not None:
        rows.append(("relayed streams", "%d open" % len(hub.relay.streams)))
    if hub.tunnel is not None:
        rows.append(("tunnel", hub.tunnel.state))
    for k, v in rows:
        out.append("<tr><th>%s</th><td>%s</td></tr>" % (esc(k), esc(v)))
    out.append("</table></body></html>")
    return out
