"""Host tools for Blinds: run, configure and provision the hub, and check its traffic."""

__version__ = "0.1.0"
