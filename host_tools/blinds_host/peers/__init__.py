"""Real peers the test home runs in its internet namespace."""
