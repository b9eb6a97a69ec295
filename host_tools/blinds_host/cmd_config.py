"""``blinds config``: check hub configuration files, and write password hashes.

``blinds config check FILE...`` runs the hub's own validator (the firmware's
``blinds.config``, imported unchanged) and adds the checks only a host can do:
each DNS upstream's ``ca_file`` must exist next to the config file and hold PEM
certificates. Exit status 0 when every file is valid, 2 otherwise.

``blinds config passwd`` prints a ``password_hash`` for the hub's own services
(the local MQTT broker's users, the control page's admin): PBKDF2-HMAC-SHA256 as
``pbkdf2-sha256$<iterations>$<salt base64>$<hash base64>``. With ``--config FILE
--user NAME`` it writes the hash into that user's entry of ``mqtt.users``; with
``--config FILE --control``, into ``control.password_hash`` (the admin password
of the control page at http://blinds.home.arpa/).

With ``--board``, a valid configuration can still draw warnings (on stderr as
``FILE: warning: ...`` lines, or a ``warnings`` list with ``--json``; the exit
status stays 0): e.g. one that leaves that board's socket budget room for fewer
than :data:`MIN_STREAMS` relayed streams.
"""

import base64
import binascii
import getpass
import hashlib
import json
import os
import sys

from .errors import UsageError

# Certificates on the hub go to mbedTLS as ``cadata``; a bundle far beyond this
# would not fit in its RAM, and a file this large is not a CA file anyway.
MAX_CA_FILE_BYTES = 256 * 1024

BOARDS = ("unix", "esp32")

# Fewer relayed streams than this at once and a device's page load or an app's
# few parallel connections already queue or get refused.
MIN_STREAMS = 4

_BEGIN = "-----BEGIN CERTIFICATE-----"
_END = "-----END CERTIFICATE-----"


def add_parser(p):
    """Add the ``check`` action to the ``blinds config`` parser ``p``."""
    sub = p.add_subparsers(dest="config_action", metavar="ACTION")
    sub.required = True
    c = sub.add_parser(
        "check",
        help="validate hub configuration files",
        description="Validate hub configuration files as the hub would, plus their CA files.",
    )
    c.add_argument(
        "files", nargs="+", metavar="FILE", help="configuration file (JSON with // comment lines)"
    )
    c.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object per file on stdout:"
        " {file, ok, problems: [{path, message}], warnings: [{path, message}]}",
    )
    c.add_argument(
        "--board",
        choices=BOARDS,
        help="also check against what this board can hold (sockets, cache and log sizes)",
    )
    c.add_argument(
        "--no-ca-check",
        action="store_true",
        help="skip the host-side check that each upstream's ca_file exists and holds certificates",
    )


    from blinds.local.auth import DEFAULT_ITERATIONS

    w = sub.add_parser(
        "passwd",
        help="print (or write into a config) a password_hash for a local MQTT user or the"
        " control page",
        description="Hash a password as the hub checks it (PBKDF2-HMAC-SHA256). The password is"
        " asked on the terminal unless --password is given.",
    )
    w.add_argument("--password", help="the password (for scripts; visible to other local users)")
    w.add_argument(
        "--iterations",
        type=int,
        default=None,
        help="PBKDF2 iterations (default %d: the firmware's default, about 0.3 s per"
        " login on an ESP32; the hub caches a password it accepted)" % DEFAULT_ITERATIONS,
    )
    w.add_argument("--config", metavar="FILE", help="write the hash into this config file")
    who = w.add_mutually_exclusive_group()
    who.add_argument("--user", metavar="NAME", help="the mqtt.users entry to write (with --config)")
    who.add_argument(
        "--control",
        action="store_true",
        help="write the control page's admin password (control.password_hash; with --config)",
    )


def run(args):
    """Run the chosen action; return the exit status."""
    if args.config_action == "check":
        return _run_check(args)
    if args.config_action == "passwd":
        return _run_passwd(args)
    raise AssertionError("unknown config action %r" % args.config_action)


def _run_check(args):
    status = 0
    for path in args.files:
        problems, warnings = check_file_warnings(
            path, ca_check=not args.no_ca_check, board=args.board
        )
        if problems:
            status = 2
        if args.json:
            doc = {
                "file": path,
                "ok": not problems,
                "problems": [{"path": p, "message": m} for p, m in problems],
                "warnings": [{"path": p, "message": m} for p, m in warnings],
            }
            print(json.dumps(doc))
            continue
        for p, m in warnings:
            print("%s: warning: %s: %s" % (path, p, m), file=sys.stderr)
        if problems:
            for p, m in problems:
                print("%s: %s: %s" % (path, p, m), file=sys.stderr)
        else:
            print("%s: ok" % path)
    return status


def board_limits(board):
    """The limits a board declares (``boards/<board>/limits.py``, the file the
    firmware itself imports), as a dict."""
    from .paths import BOARDS as BOARDS_DIR

    ns = {}
    with open(os.path.join(BOARDS_DIR, board, "limits.py")) as f:
        exec(compile(f.read(), f.name, "exec"), ns)  # noqa: S102 - our own board file
    return ns["LIMITS"]


def check_file(path, ca_check=True, board=None):
    """All problems with the config file at ``path`` as (json_path, message) pairs.

    Unreadable files and malformed JSON are reported at ``$`` like any other
    problem, so that every outcome has the same shape. ``board`` ("unix" or
    "esp32") adds that board's limits.
    """
    return check_file_warnings(path, ca_check, board)[0]


def check_file_warnings(path, ca_check=True, board=None):
    """(problems, warnings) for the config file at ``path``: as :func:`check_file`,
    plus warnings for a valid configuration on ``board`` (see :func:`board_warnings`)."""
    from blinds import config

    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        return [("$", "cannot read file: %s" % (e.strerror or e))], []
    try:
        cfg = config.load_text(data)
    except config.ConfigError as e:
        return e.problems, []
    limits = board_limits(board) if board else None
    problems = config.validate(cfg, limits)
    if ca_check:
        problems += check_ca_files(cfg, os.path.dirname(os.path.abspath(path)))
    if problems or limits is None:
        return problems, []
    return problems, board_warnings(config.check(cfg, limits), limits)


def board_warnings(cfg, limits):
    """Warnings, as (json_path, message) pairs, for the normalized ``cfg`` on a
    board with ``limits``: a socket budget with room for fewer than
    :data:`MIN_STREAMS` relayed streams at once (docs/sockets.md)."""
    from blinds.net import budget

    fixed = budget.fixed_sockets(cfg)
    per = budget.stream_sockets(cfg)
    streams = max(0, limits["max_sockets"] - fixed) // per
    if streams >= MIN_STREAMS:
        return []
    return [
        (
            "$.relay",
            "the %s board has %d sockets; the hub's own take %d, which leaves room for %d"
            " relayed stream(s) at once (%d socket(s) each), fewer than %d: use fewer relay"
            " ports or upstreams, a tunnel, or a board built with more sockets"
            % (limits.get("name", "target"), limits["max_sockets"], fixed, streams, per, MIN_STREAMS),
        )
    ]


def check_ca_files(cfg, base_dir):
    """Problems with each upstream's ``ca_file``, resolved relative to ``base_dir``.

    Works on an unvalidated config: entries whose ``ca_file`` is not a
    non-empty string are left to the validator's own report.
    """
    dns = cfg.get("dns") if isinstance(cfg, dict) else None
    ups = dns.get("upstreams") if isinstance(dns, dict) else None
    if not isinstance(ups, list):
        return []
    problems = []
    for i, up in enumerate(ups):
        ca = up.get("ca_file") if isinstance(up, dict) else None
        if not isinstance(ca, str) or not ca:
            continue
        err = pem_problem(os.path.join(base_dir, ca))
        if err:
            problems.append(("$.dns.upstreams[%d].ca_file" % i, err))
    return problems


def pem_problem(path):
    """Why the file at ``path`` is not a usable PEM certificate file, or None.

    Each ``BEGIN CERTIFICATE`` block must hold base64 of one DER SEQUENCE whose
    length matches; this catches keys, truncated files and pasted junk without
    needing an X.509 parser.
    """
    try:
        size = os.path.getsize(path)
        if size > MAX_CA_FILE_BYTES:
            return "%s: %d bytes, larger than %d" % (path, size, MAX_CA_FILE_BYTES)
        with open(path, "rb") as f:
            text = f.read().decode("ascii")
    except FileNotFoundError:
        return "file not found: %s" % path
    except IsADirectoryError:
        return "is a directory: %s" % path
    except OSError as e:
        return "cannot read %s: %s" % (path, e.strerror or e)
    except UnicodeDecodeError:
        return "not a PEM file (not ASCII text): %s" % path
    count = 0
    pos = 0
    while True:
        start = text.find(_BEGIN, pos)
        if start < 0:
            break
        end = text.find(_END, start)
        if end < 0:
            return "certificate %d has no END CERTIFICATE line: %s" % (count + 1, path)
        body = "".join(text[start + len(_BEGIN) : end].split())
        try:
            der = base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError):
            return "certificate %d is not valid base64: %s" % (count + 1, path)
        if not _is_der_sequence(der):
            return "certificate %d is not a DER certificate: %s" % (count + 1, path)
        count += 1
        pos = end + len(_END)
    if not count:
        return "no PEM certificate (BEGIN CERTIFICATE block) in %s" % path
    return None


def _is_der_sequence(der):
    # One DER SEQUENCE (tag 0x30) whose encoded length spans the whole blob.
    if len(der) < 2 or der[0] != 0x30:
        return False
    n = der[1]
    if n < 0x80:
        return 2 + n == len(der)
    k = n & 0x7F
    if k == 0 or k > 4 or len(der) < 2 + k:
        return False
    return 2 + k + int.from_bytes(der[2 : 2 + k], "big") == len(der)


def password_hash(password, iterations=None, salt=None):
    """The stored form of ``password`` (str) as the hub checks it."""
    from blinds.local import auth

    n = auth.DEFAULT_ITERATIONS if iterations is None else iterations
    if not auth.MIN_ITERATIONS <= n <= auth.MAX_ITERATIONS:
        raise UsageError("--iterations must be %d..%d" % (auth.MIN_ITERATIONS, auth.MAX_ITERATIONS))
    if not password:
        raise UsageError("the password must not be empty")
    salt = os.urandom(16) if salt is None else salt
    dk = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, n)
    return "%s$%d$%s$%s" % (auth.PREFIX, n, base64.b64encode(salt).decode(),
                            base64.b64encode(dk).decode())


def _ask_password():
    if not sys.stdin.isatty():
        raise UsageError("no terminal to ask the password on: give --password")
    a = getpass.getpass("Password: ")
    if a != getpass.getpass("Again: "):
        raise UsageError("the passwords differ")
    return a


def _run_passwd(args):
    target = args.user is not None or args.control
    if (args.config is None) == target:
        raise UsageError("--config goes with --user NAME or --control")
    pw = args.password if args.password is not None else _ask_password()
    h = password_hash(pw, args.iterations)
    if args.config is None:
        print(h)
        return 0
    if args.control:
        write_control_hash(args.config, h)
        print("%s: control.password_hash (the control page's admin password) written"
              % args.config)
        return 0
    write_user_hash(args.config, args.user, h)
    print("%s: password_hash of mqtt user %r written" % (args.config, args.user))
    return 0


def _read_config(path):
    """The config file at ``path`` as a dict, for a rewrite (no // comments)."""
    from .errors import read_input

    text = read_input(path).decode("utf-8", "replace")
    if any(line.lstrip().startswith("//") for line in text.splitlines()):
        raise UsageError("%s has // comments, which a rewrite would lose: run without --config"
                         " and paste the hash" % path)
    try:
        cfg = json.loads(text)
    except ValueError as e:
        raise UsageError("%s: invalid JSON: %s" % (path, e))
    if not isinstance(cfg, dict):
        raise UsageError("%s: not a JSON object" % path)
    return cfg


def _write_config(path, cfg):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(cfg, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)


def write_control_hash(path, h):
    """Set ``control.password_hash`` in the config file at ``path`` (adding the
    section with its defaults if absent)."""
    cfg = _read_config(path)
    c = cfg.setdefault("control", {})
    if not isinstance(c, dict):
        raise UsageError("%s: control is not an object" % path)
    c["password_hash"] = h
    _write_config(path, cfg)


def write_user_hash(path, user, h):
    """Set ``user``'s password_hash in the config file at ``path`` (adding the
    user, with no topics, if absent). Files with // comments are refused: they
    would be lost in the rewrite."""
    cfg = _read_config(path)
    m = cfg.setdefault("mqtt", {"allow_anonymous": False, "users": [],
                                "anonymous": {"publish": [], "subscribe": []}})
    if not isinstance(m, dict) or not isinstance(m.setdefault("users", []), list):
        raise UsageError("%s: mqtt.users is not a list" % path)
    for u in m["users"]:
        if isinstance(u, dict) and u.get("username") == user:
            u["password_hash"] = h
            break
    else:
        m["users"].append({"username": user, "password_hash": h, "publish": [], "subscribe": []})
    _write_config(path, cfg)
