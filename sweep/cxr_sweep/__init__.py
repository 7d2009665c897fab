"""cxr-sweep: plans of training runs that outlive the session that started them (docs/training.md,
"Sweeps"). The top floor: it drives cxr-train, cxr-export and cxr-runtime as subprocesses.

    plan.py      plan files: parsing, checking, each entry's cxr-train options and Config
    stages.py    running a stage as a subprocess (signals passed on); a plan entry's run folder
                 (cxr_training.runs.RunFolder reads what it holds)
    results.py   results.jsonl (rows written once, replaced when the judges change) and the tables
    machine.py   the CPU and the code a run was trained with
    sweep.py     the Sweep: train, export, sample, score and audit each entry; status; the lock
    utility_plan.py  [utility] plans: a generator per real subset, then cxr-utility
    errors.py    SweepError, and Stopped (a signal reached the sweep)
    cli.py       `cxr-sweep`
"""

from cxr_sweep.errors import Stopped, SweepError
from cxr_sweep.machine import code_version, cpu_name
from cxr_sweep.plan import Entry, Plan, default_root, load_plan, resolve_config, train_args
from cxr_sweep.results import (
    RESULTS,
    SCALED,
    SUPERSEDED,
    append_row,
    current,
    read_results,
    recipe_hash,
    row_key,
    seed_table,
    summary,
    table,
)
from cxr_sweep.stages import Runner, command, display, run_folder
from cxr_sweep.sweep import LOCK, Sweep, locked, status

__all__ = ["LOCK", "RESULTS", "SCALED", "SUPERSEDED", "Entry", "Plan", "Runner", "Stopped", "Sweep", "SweepError",
           "append_row", "code_version", "command", "cpu_name", "current", "default_root", "display", "load_plan",
           "locked", "read_results", "recipe_hash", "resolve_config", "row_key", "run_folder", "seed_table", "status",
           "summary", "table", "train_args"]
