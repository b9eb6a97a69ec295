"""Homes on this host: their names, their owners, and removing those whose owner is gone.

Every name a test home gives the host (namespaces, veths on their way into
them, ``/etc/netns`` folders) starts with ``bl<letter><owner PID>-``
(:data:`PREFIX_RE`); an owner record in :data:`OWNER_DIR` keeps the owner's
start time, so that a recycled PID does not pass for the owner. A home whose
owner is gone (``kill -9``, a crash, a power cut) is removed by
:func:`sweep_stale`; a home whose owner still runs is never touched.
"""

import json
import os
import re
import shutil

from . import lifecycle, netns

# bl + a letter (one per home of the owner) + the owner's PID + "-": with
# 7-digit PIDs and "d15a" the longest veth name is 15 characters (IFNAMSIZ).
PREFIX_RE = re.compile(r"^bl([a-z])([0-9]+)-")
OWNER_DIR = "/run/blinds/homes"


def prefix_for(letter, pid=None):
    """The name prefix of home ``letter`` of process ``pid`` (default: this one)."""
    return "bl%s%d-" % (letter, os.getpid() if pid is None else pid)


def _proc_start(pid):
    """The start time (clock ticks since boot) of a running process, or None if it is gone."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    if fields[0] in ("Z", "X"):  # dead, not yet reaped
        return None
    return fields[19]


def owner_path(prefix):
    """Where the owner record of home ``prefix`` is kept."""
    return os.path.join(OWNER_DIR, prefix.rstrip("-") + ".json")


def write_owner(prefix, wd, own_wd):
    """Record this process (PID, start time) as the owner of home ``prefix``."""
    os.makedirs(OWNER_DIR, exist_ok=True)
    with open(owner_path(prefix), "w") as f:
        json.dump({"pid": os.getpid(), "started": _proc_start(os.getpid()), "wd": wd,
                   "own_wd": own_wd}, f)


def read_owner(prefix):
    """The owner record of home ``prefix`` ({} if there is none)."""
    try:
        with open(owner_path(prefix)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def _names_of_homes():
    """prefix -> owner PID for every home with a trace on this host."""
    names = netns.list_ns() + netns.list_links()
    for d in ("/etc/netns", OWNER_DIR):
        try:
            names += os.listdir(d)
        except OSError:
            pass
    out = {}
    for name in names:
        if name.endswith(".json"):
            name = name[:-5] + "-"
        m = PREFIX_RE.match(name)
        if m:
            out[m.group(0)] = int(m.group(2))
    return out


def owner_alive(prefix):
    """Whether the process that built the home ``prefix`` still runs (the same process:
    a recycled PID with another start time does not count)."""
    m = PREFIX_RE.match(prefix)
    if not m:
        raise ValueError("not a home prefix: %r" % prefix)
    started = _proc_start(int(m.group(2)))
    recorded = read_owner(prefix).get("started")
    return started is not None and (recorded is None or recorded == started)


def remove_names(prefix, wd=None):
    """Remove every namespace, root-namespace link and record named ``prefix...``.

    Returns (namespaces removed, processes killed in them).
    """
    spaces = [ns for ns in netns.list_ns() if ns.startswith(prefix)]
    killed = sum(netns.del_ns(ns) for ns in spaces)
    for link in netns.list_links():
        if link.startswith(prefix):  # a veth caught on its way into a namespace
            netns.sh("ip", "link", "del", link, check=False)
    try:
        for d in os.listdir("/etc/netns"):
            if d.startswith(prefix):
                shutil.rmtree(os.path.join("/etc/netns", d), ignore_errors=True)
    except OSError:
        pass
    if wd:
        shutil.rmtree(wd, ignore_errors=True)
    try:
        os.remove(owner_path(prefix))
    except OSError:
        pass
    return len(spaces), killed


def removed_text(spaces, killed):
    """What :func:`remove_names` did, in words."""
    return "removed %d namespace(s) with their veths and bridge%s" % (
        spaces, "; killed %d process(es) left in them" % killed if killed else "")


def sweep_stale():
    """Remove every home whose owner is gone; return one line per home removed.

    Homes of running processes (this one included) are left alone.
    """
    done = []
    for prefix, pid in sorted(_names_of_homes().items()):
        if owner_alive(prefix):
            continue
        rec = read_owner(prefix)
        with lifecycle.shielded():
            removed = remove_names(prefix, rec.get("wd") if rec.get("own_wd") else None)
        done.append("removed a stale home %s (its owner, PID %d, is gone): %s"
                    % (prefix, pid, removed_text(*removed)))
    return done
