"""Training's errors, each one line for the user of cxr-train."""

from __future__ import annotations


class TrainingError(Exception):
    """A problem the user can fix (bad data, mismatched resume); one line, exit code 2."""


class NonFiniteLoss(Exception):
    """A loss became NaN or infinite; the run stopped without writing the broken weights."""


class Interrupted(Exception):
    """SIGINT or SIGTERM: the run stopped after writing a checkpoint at the current step."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum
