"""Helpers for tests that start processes and signal them."""

from __future__ import annotations

import signal


def sigint_default() -> None:
    """``preexec_fn`` for a child that a test will stop with SIGINT (Ctrl-C).

    A shell started in the background (``nohup bash .ci/run &``, cron) runs its children
    with SIGINT ignored, and a child inherits that, so Python would install no
    KeyboardInterrupt handler and the signal would do nothing. Restore the default before
    the child starts."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
