"""The sweep's errors, under cxr_runtime.CxrError: a bad plan or stage (exit code 2), a signal (128 + it)."""

from __future__ import annotations

import signal

from cxr_runtime.errors import CxrError
from cxr_training.errors import Interrupted


class SweepError(CxrError):
    """A bad plan, run root or stage failure of cxr-sweep."""


class Stopped(Interrupted):
    """SIGINT or SIGTERM reached the sweep; the running stage kept its progress."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name, signum)
