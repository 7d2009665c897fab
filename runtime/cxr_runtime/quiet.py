"""Silence native libraries that print to file descriptor 2 (TensorFlow, onnxruntime).

Some C++ libraries write diagnostics straight to fd 2 before, or regardless of, any
Python logging configuration. `quiet_stderr()` points fd 2 at /dev/null for a block and
restores it afterwards. CXR_VERBOSE=1 disables it.
Python exceptions raised in the block are unaffected.

fd 2 belongs to the whole process, so this is for code that owns its process: the
command-line tools, training and export. The runtime library itself never calls it.
It is safe to use from several threads at once: a lock and a count of open blocks make
the first block redirect and the last one restore, so overlapping blocks in different
threads can never leave stderr pointing at /dev/null.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading

_lock = threading.Lock()
_depth = 0
_saved: int | None = None
_devnull: int | None = None


def verbose() -> bool:
    return os.environ.get("CXR_VERBOSE") == "1"


def _enter() -> bool:
    """Open a block; True if it is redirected (False: no real fd 2 to redirect)."""
    global _depth, _saved, _devnull
    with _lock:
        if _depth == 0:
            try:
                sys.stderr.flush()
                _saved = os.dup(2)
            except (OSError, ValueError):  # no real fd 2 (embedded interpreters, some test runners)
                return False
            _devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(_devnull, 2)
        _depth += 1
        return True


def _exit() -> None:
    global _depth, _saved, _devnull
    with _lock:
        _depth -= 1
        if _depth == 0:
            try:
                sys.stderr.flush()
            except ValueError:
                pass
            os.dup2(_saved, 2)
            os.close(_saved)
            os.close(_devnull)
            _saved = _devnull = None


@contextlib.contextmanager
def quiet_stderr():
    if verbose() or not _enter():
        yield
        return
    try:
        yield
    finally:
        _exit()
