"""Monitor curves of sweep runs against wall-clock time: a markdown table and a small plot.

Reads each run's metrics.jsonl under $CXR_RUNS (the per-epoch monitor against the held-out
folder: KID, coverage, recall, diversity, classifier AUC) and the cumulative time of its epochs
(training plus epoch-end work, from the run's own timing: pauses between sessions do not
count).

    python bench/curves.py long-s0 long-paper-g-s0 --every 100 --plot docs/figures/curves.png
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

COLUMNS = (("q_kid", "KID", ".2f"), ("q_coverage", "coverage", ".2f"), ("q_recall", "recall", ".2f"),
           ("q_diversity", "diversity", ".3f"), ("q_c2st_auc", "classifier AUC", ".2f"))


COSTS: dict[str, float] = {}  # run name -> seconds per step measured alone (--cost), for the time axis


def rows_of(root: Path, name: str) -> list[dict]:
    """The run's epoch rows, each with `hours`: the step count times the run's step cost given with
    --cost (a step measured alone, in one process: bench/step_cost.py), else the run's own
    cumulative epoch time (training plus epoch-end work, which other work on the machine slows)."""
    from cxr_training.runs import RunFolder

    runs = [run for run in RunFolder.under(root / name) if run.history]
    if not runs:
        raise SystemExit(f"no run folder with metrics.jsonl under {root / name}")
    rows, hours = [], 0.0
    for r in runs[-1].history:
        hours += (r.get("train_seconds", 0.0) + r.get("eval_seconds", 0.0)) / 3600
        rows.append({**r, "hours": r["step"] * COSTS[name] / 3600 if name in COSTS else hours})
    return rows


def table(root: Path, names: list[str], every: int, max_hours: float = float("inf")) -> str:
    """Rows every `every` steps up to `max_hours` (an equal-time comparison)."""
    head = "| run | step | hours | " + " | ".join(label for _, label, _ in COLUMNS) + " | s/step |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for name in names:
        for r in rows_of(root, name):
            if r["step"] % every or r["hours"] > max_hours + 1e-9:
                continue
            cells = [f"{r[k]:{fmt}}" if k in r else "-" for k, _, fmt in COLUMNS]
            lines.append(f"| {name} | {r['step']} | {r['hours']:.2f} | " + " | ".join(cells)
                         + f" | {r.get('seconds_per_step', float('nan')):.2f} |")
    return "\n".join(lines)


def plot(root: Path, names: list[str], out: Path, real_diversity: float | None = None,
         max_hours: float = float("inf")) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(13, 3.1))
    for name in names:
        rows = [r for r in rows_of(root, name) if "q_kid" in r and r["hours"] <= max_hours + 1e-9]
        t = [r["hours"] for r in rows]
        axes[0].plot(t, [max(r["q_kid"], 1e-3) for r in rows], "o-", ms=3, label=name)
        axes[1].plot(t, [r["q_coverage"] for r in rows], "o-", ms=3, label=name)
        axes[2].plot(t, [r["q_recall"] for r in rows], "o-", ms=3, label=name)
        axes[3].plot(t, [r["q_diversity"] for r in rows], "o-", ms=3, label=name)
        if real_diversity is None and rows:
            real_diversity = rows[-1].get("q_diversity_real")
    axes[0].set_yscale("log")
    for ax, title in zip(axes, ("KID (lower is better)", "coverage", "recall", "diversity (mean SSIM)")):
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("hours of steps at the cost measured alone" if COSTS else "hours of training", fontsize=8)
        ax.grid(alpha=0.3)
    if real_diversity is not None:
        axes[3].axhline(real_diversity, color="grey", ls="--", label="held-out real")
    axes[0].legend(fontsize=7)
    axes[3].legend(fontsize=7)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80)
    print(f"wrote {out} ({out.stat().st_size / 1e3:.0f} kB)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("names", nargs="+", help="run names of a sweep plan")
    ap.add_argument("--runs", default=os.environ.get("CXR_RUNS", str(Path.home() / "cxr-runs")))
    ap.add_argument("--every", type=int, default=100, help="table rows every this many steps")
    ap.add_argument("--plot", default=None, help="also draw the curves into this PNG")
    ap.add_argument("--cost", action="append", default=[], metavar="NAME=SECONDS",
                    help="time axis of run NAME: steps x SECONDS (its step cost measured alone)")
    ap.add_argument("--max-hours", type=float, default=None,
                    help="only the steps up to this many hours (every run over the same time)")
    args = ap.parse_args()
    max_hours = float("inf") if args.max_hours is None else args.max_hours
    for item in args.cost:
        name, _, seconds = item.partition("=")
        COSTS[name] = float(seconds)
    root = Path(args.runs).expanduser()
    print(table(root, args.names, args.every, max_hours))
    if args.plot:
        plot(root, args.names, Path(args.plot), max_hours=max_hours)


if __name__ == "__main__":
    main()
