"""Running the stages (cxr-train, cxr-export, cxr-runtime) as subprocesses, and finding a plan
entry's run folder (read through cxr_training.runs.RunFolder)."""

from __future__ import annotations

import contextlib
import ctypes
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

from cxr_sweep.errors import Stopped, SweepError
from cxr_training.runs import RunFolder


def _pdeathsig():  # pragma: no cover - runs in the child between fork and exec
    """The stage gets SIGTERM if the sweep dies (SIGKILL included), so no orphan trains on."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


class Runner:
    """Runs stages as subprocesses, one at a time, passing SIGINT/SIGTERM on to the stage."""

    def __init__(self, log=None):
        self.child: subprocess.Popen | None = None
        self.signum: int | None = None
        self.log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))

    def handler(self, signum, frame):
        if self.signum is None:
            self.log(f"cxr-sweep: {signal.Signals(signum).name}: stopping the running stage (it keeps its progress)")
        self.signum = self.signum or signum
        if self.child is not None and self.child.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.child.send_signal(signum)

    @contextlib.contextmanager
    def signals(self):
        saved = {s: signal.signal(s, self.handler) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for s, h in saved.items():
                signal.signal(s, h)

    def call(self, argv: list[str], log_path: Path, ok=(0,), stdout_path: Path | None = None) -> int:
        """Run argv with its output appended to log_path (stdout to `stdout_path` instead when
        given: written whole or not at all); return its exit code. Raises Stopped when a signal
        arrived, SweepError when the code is not in `ok`."""
        if self.signum is not None:
            raise Stopped(self.signum)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        partial = stdout_path.with_name(stdout_path.name + ".partial") if stdout_path else None
        with open(log_path, "ab") as log, open(partial or os.devnull, "wb") as captured:
            log.write(f"\n$ {shlex.join(display(argv))}{f' > {stdout_path.name}' if stdout_path else ''}   "
                      f"# {time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode())
            log.flush()
            self.child = subprocess.Popen(argv, stdout=captured if partial else log, stderr=log,
                                          stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=_pdeathsig)
            try:
                code = self.child.wait()
            finally:
                self.child = None
        if self.signum is not None:
            raise Stopped(self.signum)
        if code not in ok:
            raise SweepError(f"{display(argv)[0]} exited with {code}; the last lines of {log_path}:\n"
                             f"{_tail(log_path, 6)}")
        if partial:
            os.replace(partial, stdout_path)
        return code


_MODULES = {"cxr-train": "cxr_training.cli", "cxr-export": "cxr_export.cli", "cxr-runtime": "cxr_runtime.cli",
            "cxr-utility": "cxr_utility.cli"}  # run as programs: the sweep imports none of cxr_utility


def command(prog: str, *args) -> list[str]:
    """argv running one of the project's CLIs with this interpreter (no PATH lookup)."""
    return [sys.executable, "-m", _MODULES[prog], *map(str, args)]


def display(argv: list[str]) -> list[str]:
    """argv as the user would type it (cxr-train ... instead of python -m cxr_training.cli ...)."""
    if len(argv) >= 3 and argv[1] == "-m":
        names = {v: k for k, v in _MODULES.items()}
        if argv[2] in names:
            return [names[argv[2]], *argv[3:]]
    return list(argv)


def _tail(path: Path, n: int) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join("  " + x for x in lines[-n:])


def run_folder(root: Path, name: str) -> Path | None:
    """The numbered cxr-train folder of a plan entry ($CXR_RUNS/<name>/00001-<preset>) that has
    its config.json, or None."""
    found = [r for r in RunFolder.under(root / name) if r.started]
    return found[-1].path if found else None


def _rmtree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


