"""Stopping cleanly: SIGINT, SIGTERM and SIGHUP end a long-running command at once.

The pieces, each usable on its own (``blinds sim``, ``demo``, ``run``, the test
home, the bench harness):

``stoppable(name)``
    A context manager for a command's body. The first of SIGINT, SIGTERM or
    SIGHUP raises :class:`Interrupted` in the main thread, so ``finally``
    blocks and context managers clean up as they unwind; later signals are
    ignored, so a second Ctrl-C cannot cut the clean-up short. On the way out
    it says what was stopped (see :func:`note`) and keeps the exit status
    (130 for SIGINT, 143 for SIGTERM, 129 for SIGHUP) in ``.exit_status``.
``shielded()``
    Clean-up that a signal must not cut in half (removing a home): SIGINT,
    SIGTERM, SIGHUP and SIGALRM (pytest-timeout) are held until it ends, then
    delivered to whatever handler was there before.
``stop_processes(procs)``
    Stop several process groups at once: a polite signal, a bounded wait,
    then SIGKILL.
``run_child(argv)``
    Run a program that cleans up on SIGINT (the hub on the MicroPython unix
    port, which has no signal module) and pass any stop request on to it as
    one SIGINT.
"""

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import threading
import time

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
HELD = SIGNALS + (signal.SIGALRM,)
STOP_GRACE_S = 3.0       # a stopped process group gets this long before SIGKILL
CHILD_GRACE_S = 2.5      # run_child: the program's time to clean up after SIGINT
_PR_SET_PDEATHSIG = 1


class Interrupted(KeyboardInterrupt):
    """A stop request (a signal); ``exit_status`` is 128 + the signal number."""

    def __init__(self, signum):
        self.signum = signum
        self.signame = signal.Signals(signum).name
        self.exit_status = 128 + signum
        super().__init__(self.signame)


class _State:
    stopping = None      # the signal being acted on, once one came
    repeats = 0          # signals ignored since
    notes = []           # what was stopped, said on the way out


_S = _State()


def _on_signal(signum, frame):
    if _S.stopping is not None:
        _S.repeats += 1
        return
    _S.stopping = signum
    _S.notes = []
    raise Interrupted(signum)


def stopping():
    """The signal a :func:`stoppable` block is stopping on, or None."""
    return _S.stopping


def note(text):
    """Record one thing that was stopped, if a stop is under way (said by ``stoppable``)."""
    if _S.stopping is not None:
        _S.notes.append(text)


def install():
    """Make SIGINT, SIGTERM and SIGHUP raise :class:`Interrupted` (once); return old handlers."""
    _S.stopping, _S.repeats, _S.notes = None, 0, []
    return {s: signal.signal(s, _on_signal) for s in SIGNALS}


def uninstall(old):
    """Put back the handlers :func:`install` returned."""
    for s, h in old.items():
        signal.signal(s, h if h is not None else signal.SIG_DFL)
    _S.stopping = None


class stoppable(contextlib.AbstractContextManager):
    """Run a command's body so that a signal stops it cleanly (see the module docstring).

    ``with stoppable("blinds sim") as stop: ...``; after the block,
    ``stop.interrupted`` is the :class:`Interrupted` it caught (or None) and
    ``stop.exit_status`` the status to exit with.
    """

    def __init__(self, name, out=None):
        self.name = name
        self.out = out
        self.interrupted = None
        self.exit_status = 0
        self._old = None

    def __enter__(self):
        self._old = install()
        return self

    def __exit__(self, typ, exc, tb):
        notes, repeats = _S.notes, _S.repeats
        uninstall(self._old)
        if not isinstance(exc, Interrupted):
            return False
        self.interrupted = exc
        self.exit_status = exc.exit_status
        out = self.out or sys.stderr
        print("%s: stopped by %s%s" % (
            self.name, exc.signame, " (and %d more stop request(s) while cleaning up)" % repeats
            if repeats else ""), file=out)
        for line in notes:
            print("  " + line, file=out)
        out.flush()
        return True


def run_stoppable(name, fn, *args):
    """``fn(*args)`` under :class:`stoppable`: its result, or 128 + the signal that stopped it."""
    with stoppable(name) as stop:
        return fn(*args)
    return stop.exit_status


@contextlib.contextmanager
def shielded():
    """Hold SIGINT, SIGTERM, SIGHUP and SIGALRM until the block ends, then deliver them.

    Only the main thread receives signals; elsewhere this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held = []
    old = {s: signal.signal(s, lambda signum, frame: held.append(signum)) for s in HELD}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h if h is not None else signal.SIG_DFL)
        for signum in held:
            _deliver(signum, old[signum])


def _deliver(signum, handler):
    if callable(handler):
        handler(signum, None)
    elif handler == signal.SIG_DFL and signum != signal.SIGALRM:
        os.kill(os.getpid(), signum)  # what it would have done, now that clean-up is over


def _killpg(pid, sig):
    try:
        os.killpg(pid, sig)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def stop_processes(procs, grace_s=STOP_GRACE_S):
    """Stop process groups at once; return the names of those that were running.

    ``procs``: (name, Popen, signal) triples; each Popen leads its own process
    group (``start_new_session=True``). Each group gets its signal (SIGTERM,
    or SIGINT for tcpdump to finish its file), then all share one ``grace_s``
    wait, then whatever is left gets SIGKILL.
    """
    running = []
    for name, proc, sig in procs:
        if proc.poll() is None and _killpg(proc.pid, sig):
            running.append((name, proc))
    deadline = time.monotonic() + grace_s
    for _, proc in running:
        try:
            proc.wait(max(deadline - time.monotonic(), 0.01))
        except subprocess.TimeoutExpired:
            pass
    for _, proc in running:
        _killpg(proc.pid, signal.SIGKILL)  # the group: children too, even if the leader is gone
        try:
            proc.wait(2)
        except subprocess.TimeoutExpired:
            pass
    return [name for name, _ in running]


def _child_setup():
    # Its own process group, so that a terminal's Ctrl-C reaches only us and we
    # pass it on exactly once; SIGTERM and SIGHUP ignored (an ignored signal
    # stays ignored across exec), so that a stop sent to every process at once
    # (systemd's default KillMode) cannot kill it before it has cleaned up;
    # and SIGINT if we die, so it still cleans up.
    os.setpgid(0, 0)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGINT))
    except (OSError, AttributeError):
        pass  # not Linux: a stop request still reaches it through us


def run_child(argv, env=None, grace_s=CHILD_GRACE_S, name=None):
    """Run ``argv``; on SIGINT, SIGTERM or SIGHUP send it one SIGINT and wait.

    Returns its exit status, or 128 + the signal if we were asked to stop (if
    it has not finished ``grace_s`` after the request, it is killed). ``name``
    (for messages) defaults to the program's.
    """
    name = name or os.path.basename(argv[0])
    got, child = [], []

    def forward(signum, frame):
        if not got:
            got.append(signum)
            if child:
                _killpg(child[0].pid, signal.SIGINT)

    old = {s: signal.signal(s, forward) for s in SIGNALS}
    try:
        proc = subprocess.Popen(argv, env=env, preexec_fn=_child_setup)
        child.append(proc)
        if got:  # a request that came while it was starting
            _killpg(proc.pid, signal.SIGINT)
        deadline = None
        while True:
            try:
                rc = proc.wait(0.1)
                break
            except subprocess.TimeoutExpired:
                pass
            if got and deadline is None:
                deadline = time.monotonic() + grace_s
            if deadline is not None and time.monotonic() > deadline:
                print("%s: %s did not stop within %g s of SIGINT: killed" % (
                    name, os.path.basename(argv[0]), grace_s), file=sys.stderr, flush=True)
                _killpg(proc.pid, signal.SIGKILL)
                rc = proc.wait()
                break
    finally:
        for s, h in old.items():
            signal.signal(s, h if h is not None else signal.SIG_DFL)
    if not got:
        return rc
    print("%s: stopped by %s (passed on as SIGINT; %s exited with %d)" % (
        name, signal.Signals(got[0]).name, os.path.basename(argv[0]), rc),
        file=sys.stderr, flush=True)
    return 128 + got[0]
