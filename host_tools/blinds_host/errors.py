"""Error family of the host tools.

Every error a user can cause ends as one of these, printed as one line by the CLI
with its exit status; anything else is a bug and shows a traceback.
"""


class BlindsError(Exception):
    """Base of all host-tool errors."""

    exit_status = 1


class UsageError(BlindsError):
    """The command line or an input file is not usable."""

    exit_status = 2


class ConfigError(BlindsError):
    """A hub configuration failed validation; ``problems`` holds (path, message) pairs."""

    exit_status = 2

    def __init__(self, problems):
        self.problems = list(problems)
        super().__init__("; ".join("%s: %s" % p for p in self.problems))


class EnvironmentProblem(BlindsError):
    """Something the machine lacks (root, a package, the MicroPython port)."""

    exit_status = 3


def read_input(path):
    """The bytes of an input file the user named; UsageError if unreadable."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise UsageError("cannot read %s: %s" % (path, e.strerror or e))
