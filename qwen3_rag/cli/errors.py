"""The command-line application's own errors: each is reported as one line on stderr, never a traceback."""

from __future__ import annotations


class UsageError(Exception):
    """A mistake in what the user asked for, or data that cannot be used: reported as one line, exit status 2."""
