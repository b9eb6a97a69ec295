# Files on the board's filesystem: the configuration, CA files and the hub's
# state folder (status.json, learned.json). Portable: a board gives the paths,
# this does the rest, on LittleFS (ESP32) and on a host folder (unix) alike.
import json
import os


def write_json(f, obj, depth=3):
    # One write per entry down to `depth` levels: json.dump(obj, f) makes a
    # write() call per token (thousands of syscalls), json.dumps(obj) one
    # large string that a fragmented heap may not have room for. Objects with
    # a write_json(f, dumps) method write themselves.
    if hasattr(obj, "write_json"):
        obj.write_json(f, json.dumps)
    elif depth and isinstance(obj, dict):
        sep = "{"
        for k, v in obj.items():
            f.write(sep + json.dumps(k) + ":")
            write_json(f, v, depth - 1)
            sep = ","
        f.write("}" if sep == "," else "{}")
    elif depth and isinstance(obj, list) and (len(obj) > 8 or _nested(obj)):
        sep = "["
        for v in obj:
            f.write(sep)
            write_json(f, v, depth - 1)
            sep = ","
        f.write("]")
    else:
        f.write(json.dumps(obj))


def _nested(obj):
    # A list of containers (the devices, say): written element by element,
    # however short, so that no string of all of them is made at once.
    return bool(obj) and isinstance(obj[0], (dict, list, tuple))


class Items:
    # A JSON object written pair by pair from an iterable of (key, value):
    # each value is made, written and dropped in its turn, so no more than
    # one of them is held at a time.
    def __init__(self, pairs):
        self.pairs = pairs

    def write_json(self, f, dumps):
        sep = "{"
        for k, v in self.pairs:
            f.write(sep)
            f.write(dumps(k))
            f.write(":")
            write_json(f, v, 2)
            sep = ","
        f.write("}" if sep == "," else "{}")


class Seq:
    # A JSON array written element by element from an iterable.
    def __init__(self, items):
        self.items = items

    def write_json(self, f, dumps):
        sep = "["
        for v in self.items:
            f.write(sep)
            write_json(f, v, 1)
            sep = ","
        f.write("]" if sep == "," else "[]")


class Storage:
    # config_path: the configuration file; files it names (ca_file) are
    # relative to its folder. state_dir: where the hub keeps its state.
    def __init__(self, config_path, state_dir):
        self.config_path = config_path
        self.config_dir = config_path.rpartition("/")[0] or "."
        self.state_dir = state_dir
        try:
            os.mkdir(state_dir)
        except OSError:
            pass  # it exists

    def read_config(self):
        with open(self.config_path) as f:
            return f.read()

    def read_file(self, path):
        if not path.startswith("/"):
            path = self.config_dir + "/" + path
        with open(path, "rb") as f:
            return f.read()

    def save(self, name, data):
        # Atomic: a reader (or a power cut) sees the old file or the new one.
        path = self.state_dir + "/" + name
        with open(path + ".tmp", "wb") as f:
            f.write(data)
        os.rename(path + ".tmp", path)

    def save_json(self, name, obj):
        path = self.state_dir + "/" + name
        with open(path + ".tmp", "w") as f:
            write_json(f, obj)
        os.rename(path + ".tmp", path)

    def load(self, name):
        try:
            with open(self.state_dir + "/" + name, "rb") as f:
                return f.read()
        except OSError:
            return None
