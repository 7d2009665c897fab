"""SIGINT and SIGTERM during training: the first sets a flag (train.fit finishes the current
step, writes a checkpoint there and stops the run), a second one stops at once."""

from __future__ import annotations

import signal
import threading


class StopState:
    """Shared between the signal handler and the training loop (train.fit)."""

    def __init__(self):
        self.signum: int | None = None
        self.checkpoint: str | None = None

    def handler(self, signum, frame):
        if self.signum is not None:  # a second signal: stop now, without the checkpoint
            raise KeyboardInterrupt
        self.signum = signum


class handled:
    """SIGINT and SIGTERM set a flag (train.fit checkpoints and stops); installed
    only in the main thread, previous handlers restored afterwards."""

    def __init__(self, state: StopState):
        self.state = state
        self.saved: dict = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.saved[sig] = signal.signal(sig, self.state.handler)
        return self

    def __exit__(self, *exc):
        for sig, handler in self.saved.items():
            signal.signal(sig, handler)
        return False
