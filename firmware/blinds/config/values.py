# Configuration values: JSON paths for messages, generic shapes (objects,
# integers, choices, strings, arrays) and value syntax (addresses, names, MACs).
# Each check appends (path, message) to `out` and returns the normalized value
# or None. Portable: the host's `blinds config check` and the hub share it.
from blinds.compat import const

_MAX_NAME = const(253)
_MAX_LABEL = const(63)

# Explicit, because CPython's strip() also removes Unicode spaces and
# MicroPython's does not: the host must judge a name as the hub does.
_BLANK = " \t\n\r\x0b\x0c"

_DIGITS = "0123456789"
_HEX = "0123456789abcdefABCDEF"
_NAME_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_"
# RFC 3986 pchar plus "/": no query, fragment, space or template braces.
_URL_PATH_CHARS = _NAME_CHARS + ".~/%!$&'()*+,;=:@"
_IDENT_FIRST = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_"


# ---- paths and messages ----------------------------------------------------


def _kp(path, key):
    # "$.ap.ip" for plain keys, '$["odd key"]' for anything else.
    if isinstance(key, str) and key and key[0] in _IDENT_FIRST:
        for c in key:
            if c not in _IDENT_FIRST and c not in _DIGITS:
                break
        else:
            return path + "." + key
    s = key if isinstance(key, str) else str(key)
    q = []
    for c in s:
        if c == '"' or c == "\\":
            q.append("\\" + c)
        elif c < " ":
            q.append("\\u%04x" % ord(c))
        else:
            q.append(c)
    return path + '["' + "".join(q) + '"]'


def _kind(v):
    # JSON type names, so messages read the same on both runtimes.
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int):
        return "integer"
    if isinstance(v, float):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, (list, tuple)):
        return "array"
    if isinstance(v, dict):
        return "object"
    return "unsupported value"


def _want(out, path, what, v):
    out.append((path, "expected " + what + ", got " + _kind(v)))


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


# ---- generic shapes ----------------------------------------------------------


def _obj(v, path, out, required, optional):
    # True if v is an object; reports unknown and missing keys ("_..." are comments).
    if not isinstance(v, dict):
        _want(out, path, "an object", v)
        return False
    odd = []
    for k in v:
        if isinstance(k, str):
            if k.startswith("_") or k in required or k in optional:
                continue
            odd.append(k)
        else:
            odd.append(str(k))
    for k in sorted(odd):
        out.append((_kp(path, k), "unknown key"))
    for k in required:
        if k not in v:
            out.append((_kp(path, k), "missing required key"))
    return True


def _int(v, path, out, lo, hi):
    if not _is_int(v):
        _want(out, path, "an integer", v)
        return None
    if v < lo or v > hi:
        out.append((path, "%d is out of range %d..%d" % (v, lo, hi)))
        return None
    return v


def _ints(src, dst, path, out, table):
    for k, d, lo, hi in table:
        dst[k] = _int(src[k], _kp(path, k), out, lo, hi) if k in src else d


def _choice(v, path, out, choices):
    if isinstance(v, str) and v in choices:
        return v
    if not isinstance(v, str):
        _want(out, path, "a string", v)
    else:
        out.append((path, "must be one of " + ", ".join('"%s"' % c for c in choices)))
    return None


def _str(v, path, out, lo, hi):
    if not isinstance(v, str):
        _want(out, path, "a string", v)
        return None
    if not lo <= len(v) <= hi:
        out.append((path, "length %d is out of range %d..%d" % (len(v), lo, hi)))
        return None
    return v


def _list(v, path, out, lo, hi):
    if not isinstance(v, list):
        _want(out, path, "an array", v)
        return False
    if not lo <= len(v) <= hi:
        out.append((path, "%d entries, allowed %d..%d" % (len(v), lo, hi)))
        return False
    return True


# ---- value syntax --------------------------------------------------------------


def _ipv4(v, path, out):
    # Dotted quad -> 32-bit int; no leading zeros (they read as octal elsewhere).
    if not isinstance(v, str):
        _want(out, path, "a string (dotted IPv4 address)", v)
        return None
    parts = v.split(".")
    n = 0
    if len(parts) == 4:
        for p in parts:
            if not 1 <= len(p) <= 3 or (len(p) > 1 and p[0] == "0"):
                break
            if [c for c in p if c not in _DIGITS] or int(p) > 255:
                break
            n = (n << 8) | int(p)
        else:
            return n
    out.append((path, "not a dotted IPv4 address (like 192.168.4.1)"))
    return None


def _unicast(v, path, out):
    n = _ipv4(v, path, out)
    if n is None:
        return None
    if n == 0 or n >> 24 == 0 or n >> 24 >= 224 or n >> 24 == 127:
        out.append((path, "not a usable unicast address"))
        return None
    return n


def _dns_name(v, wildcard):
    # -> (normalized name, None) or (None, problem). Lower-case, no trailing dot.
    if not isinstance(v, str):
        return None, "expected a string, got " + _kind(v)
    s = v[:-1] if v.endswith(".") else v
    body = s[2:] if wildcard and s.startswith("*.") else s
    if not body:
        return None, "empty name"
    if len(s) > _MAX_NAME:
        return None, "name longer than %d characters" % _MAX_NAME
    labels = body.split(".")
    for label in labels:
        if not label:
            return None, "empty label"
        if len(label) > _MAX_LABEL:
            return None, "label longer than %d characters" % _MAX_LABEL
        for c in label:
            if c not in _NAME_CHARS:
                if c == "*":
                    if wildcard:
                        return None, ('a wildcard must be the whole first label,'
                                      ' as in "*.example.com"')
                    return None, "wildcards are not allowed here"
                return None, "invalid character in name (allowed: a-z 0-9 - _)"
    if not [c for c in labels[-1] if c not in _DIGITS]:
        return None, "an IP address is not allowed here; give a DNS name"
    return s.lower(), None


def _name(v, path, out, wildcard):
    n, err = _dns_name(v, wildcard)
    if err:
        out.append((path, err))
    return n


def _mac(v, path, out):
    if not isinstance(v, str):
        _want(out, path, "a string (MAC address)", v)
        return None
    if len(v) == 17 and v[2] in ":-":
        sep = v[2]
        ok = True
        for i in range(17):
            if i % 3 == 2:
                ok = ok and v[i] == sep
            else:
                ok = ok and v[i] in _HEX
        if ok:
            if int(v[0:2], 16) & 1:
                out.append((path, "a multicast address cannot be a device"))
                return None
            return v.lower().replace("-", ":")
    out.append((path, "not a MAC address (like 02:00:00:00:00:01)"))
    return None
