"""Training's errors, all under cxr_runtime.CxrError (exit code 2 unless stated), each one line
for the user of cxr-train or cxr-sweep.

    CxrError
    |-- TrainingError       a problem the user can fix: bad data or config, a mismatched resume
    |   |-- StrategyError       a distribution strategy that cannot be set up as asked
    |   `-- RunFolderError      a run folder whose config.json (or generator.json) cannot be read
    |-- CheckpointError     a checkpoint that cannot be read or restored
    |   `-- NonFiniteState      refusal to write a checkpoint holding NaN or infinite values
    |-- NonFiniteLoss       a loss became NaN or infinite (exit code 1)
    `-- Interrupted         SIGINT or SIGTERM, checkpoint written (exit code 128 + signal)

(cxr-sweep's SweepError lives in cxr_sweep.errors.)
"""

from __future__ import annotations

from cxr_runtime.errors import CxrError


class TrainingError(CxrError):
    """A problem the user can fix (bad data, mismatched resume); one line, exit code 2."""


class StrategyError(TrainingError, ValueError):
    """A strategy that cannot be set up as asked (bad TF_CONFIG, too late to split devices)."""


class RunFolderError(TrainingError):
    """A run folder whose config.json (or a generator's generator.json) is missing or unreadable."""


class CheckpointError(CxrError, RuntimeError):
    """A checkpoint that cannot be read or does not fit the model."""


class NonFiniteState(CheckpointError):
    """Refusal to write a checkpoint holding NaN or infinite values."""


class NonFiniteLoss(CxrError):
    """A loss became NaN or infinite; the run stopped without writing the broken weights."""

    exit_code = 1


class Interrupted(CxrError):
    """SIGINT or SIGTERM: the run (or sweep) stopped after keeping its progress."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum
        self.exit_code = 128 + signum
