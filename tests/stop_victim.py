"""Not part of the suite (the name does not match test_*.py): test_stop.py runs it in a
pytest of its own, then stops or kills that pytest while the home fixture is up."""

import time


def test_holds_a_home(home):
    print("home up", home.prefix, home.wd, flush=True)
    time.sleep(60)
