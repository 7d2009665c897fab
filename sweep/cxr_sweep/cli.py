"""cxr-sweep's command line."""

from __future__ import annotations

import sys
from pathlib import Path

from cxr_runtime.errors import reported
from cxr_sweep.errors import Stopped, SweepError
from cxr_sweep.plan import default_root, load_plan, resolve_config
from cxr_sweep.results import RESULTS, read_results, seed_table, table
from cxr_sweep.sweep import Sweep, locked, status


def main(argv=None) -> None:
    import click

    @click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
    @click.argument("plan", required=False, type=click.Path(dir_okay=False, path_type=Path))
    @click.option("--runs", "root", type=click.Path(file_okay=False, path_type=Path), default=None,
                  help="Run root [default: $CXR_RUNS, else ~/cxr-runs]; keep it outside the checkout.")
    @click.option("--table", "as_table", is_flag=True, help="Print the rows of results.jsonl as a markdown table.")
    @click.option("--seeds", "by_seed", is_flag=True,
                  help="Print results.jsonl with the seeds of each recipe (same config apart from the seed) "
                       "folded into one line: mean and range, then the baseline line of each held-out folder.")
    @click.option("--status", "show_status", is_flag=True, help="Show where each run of PLAN stands; run nothing.")
    @click.option("--check", is_flag=True, help="Check PLAN (every entry's flags and values); run nothing.")
    def cli(plan, root, as_table, by_seed, show_status, check):
        """Run a plan of training runs, one after another, each trained, exported, sampled, scored
        against the held-out folder and audited, with one row per scored model in
        $CXR_RUNS/results.jsonl. The same command resumes an interrupted plan; finished runs are
        skipped. docs/training.md ("Sweeps") describes the plan format.

        \b
        Examples:
          cxr-sweep bench/plans/recipe.toml
          nohup cxr-sweep bench/plans/recipe.toml > ~/cxr-runs/sweep.log 2>&1 &
          cxr-sweep bench/plans/recipe.toml --status
          cxr-sweep --table
          cxr-sweep --seeds
          cxr-sweep bench/plans/utility.toml    (a [utility] plan: a generator per real subset, then cxr-utility)
        """
        root = Path(root).expanduser() if root else default_root()
        from cxr_training.tfenv import missing_extra

        problem = None if as_table or by_seed else missing_extra("cxr-sweep", ("tensorflow", "keras", "tf2onnx"))
        if problem:  # the runs need cxr-train and cxr-export
            click.echo(f"error: {problem}", err=True)
            sys.exit(2)
        with reported():  # SweepError and the like: one line, exit 2
            if as_table or by_seed:
                rows = read_results(root)
                if not rows:
                    raise SweepError(f"no rows in {root / RESULTS} yet")
                click.echo(seed_table(rows) if by_seed else table(rows))
                return
            if plan is None:
                raise click.UsageError("give a PLAN file (or --table)")
            utility = _utility_plan(plan)
            if utility is not None:  # a [utility] plan: generators per subset, then the classifier protocols
                if check or show_status:
                    click.echo(f"{utility.name}: ok (sizes {', '.join(map(str, utility.sizes))} per class, "
                               f"preset {utility.preset}, {utility.seeds} classifier seeds)")
                    return
                from cxr_sweep.utility_plan import UtilityJob

                with locked(root):
                    job = UtilityJob(utility, root)
                    with job.runner.signals():
                        try:
                            job.run()
                        except Stopped as e:
                            click.echo(f"cxr-sweep: stopped by {e}; `cxr-sweep {plan}` continues where it stopped",
                                       err=True)
                            sys.exit(e.exit_code)
                return
            loaded = load_plan(plan)
            if check:
                for e in loaded.runs:
                    cfg = resolve_config(e)
                    click.echo(f"{e.name}: ok ({cfg.total_steps} steps, {cfg.epochs} x {cfg.steps_per_epoch}, "
                               f"batch {cfg.batch_size}, config {cfg.hash()})")
                return
            if show_status:
                for line in status(loaded, root):
                    click.echo(line)
                return
            for label, folder in (("data", loaded.data), ("heldout", loaded.heldout)):
                if not Path(folder).is_dir():
                    raise SweepError(f"the plan's {label} folder {folder} does not exist (relative paths are read "
                                     f"from the current folder; set `{label} = ...` in the plan or "
                                     f"CXR_{label.upper()} to an absolute path)")
            with locked(root):
                sweep = Sweep(plan, root)
                with sweep.runner.signals():
                    try:
                        code = sweep.run()
                    except Stopped as e:
                        click.echo(f"cxr-sweep: stopped by {e}; `cxr-sweep {plan}` continues where it stopped",
                                   err=True)
                        sys.exit(e.exit_code)
            sys.exit(code)

    cli.main(args=argv, prog_name="cxr-sweep")


def _utility_plan(path: Path):
    """The plan as a utility plan when it holds a [utility] table, else None (a training plan)."""
    import tomllib

    from cxr_sweep.utility_plan import is_utility_plan, load_utility_plan

    try:
        raw = tomllib.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None  # load_plan says what is wrong with it
    return load_utility_plan(raw, Path(path)) if is_utility_plan(raw) else None


if __name__ == "__main__":  # pragma: no cover
    main()
