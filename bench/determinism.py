"""Is a run of one seed bitwise the same run again, at the real size? And what does
`--deterministic` (one inter-op thread, op determinism) cost a step?

For each mode (TensorFlow's default thread pools, then --deterministic) a fresh process, set up
as cxr-train sets TensorFlow up, trains the same config three times from scratch (`--steps`
steps in two epochs of the `long` preset, the real 128x128 networks, seed 0, no held-out
monitor): twice straight through, once paused after the first epoch and resumed. It reports
the largest difference of any variable (G, D and the optimizers' state, from the final
checkpoint) between the two straight runs, and between a straight run and the resumed one, and
the median step time of the straight runs. Modes alternate for `--rounds` rounds, so drift on the machine hits both alike;
compare the step times only within one run of this script, on a machine that does nothing else.

    python bench/determinism.py [--steps 20] [--rounds 2] [--out bench/determinism.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "kermany-cxr" / "train" / "NORMAL"

CHILD = """
from cxr_training.tfenv import configure

configure()  # TensorFlow's settings as cxr-train runs it (oneDNN on, quiet start-up)
import json, statistics, sys, tempfile
import numpy as np
from cxr_training.config import preset
from cxr_training.runs import RunFolder
from cxr_training.train import train

deterministic, steps, data, preset_name = sys.argv[1] == "1", int(sys.argv[2]), sys.argv[3], sys.argv[4]
half = steps // 2
cfg = preset(preset_name).replace(epochs=2, steps_per_epoch=half, checkpoint_minutes=0.0, deterministic=deterministic,
                                  quality_images=0)

def final(run):
    ckpt = max((run / "checkpoints").iterdir())  # every variable: G, D, optimizer state
    with np.load(ckpt / "state.npz") as z:
        return {k: z[k] for k in z.files}

def diff(a, b):
    return max(float(np.max(np.abs(a[k].astype(np.float64) - b[k].astype(np.float64)))) for k in a)

runs = [train(cfg, data, out_root=tempfile.mkdtemp(prefix="cxr-determinism-"), log=lambda m: None) for _ in range(2)]
paused = train(cfg, data, out_root=tempfile.mkdtemp(prefix="cxr-determinism-"), log=lambda m: None, stop_at=half)
resumed = train(resume_dir=paused, log=lambda m: None)
per_step = [statistics.median(row["seconds_per_step"] for row in RunFolder(r).history) for r in runs]
a, b, c = final(runs[0]), final(runs[1]), final(resumed)
print(json.dumps({"max_abs_diff": diff(a, b), "resume_max_abs_diff": diff(a, c), "variables": len(a),
                  "seconds_per_step": per_step}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=20, help="steps of each run (one epoch)")
    ap.add_argument("--rounds", type=int, default=2, help="rounds of (default, deterministic)")
    ap.add_argument("--preset", default="long", help="the config trained (its networks and recipe)")
    ap.add_argument("--data", default=str(DEFAULT_DATA))
    ap.add_argument("--out", default=str(ROOT / "bench" / "determinism.json"))
    args = ap.parse_args()
    results: dict[str, list[dict]] = {"default": [], "deterministic": []}
    for r in range(args.rounds):
        for mode in results:
            done = subprocess.run([sys.executable, "-c", CHILD, "1" if mode == "deterministic" else "0",
                                   str(args.steps), args.data, args.preset], capture_output=True, text=True,
                                  env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
            if done.returncode != 0:
                raise SystemExit(f"{mode}: child failed:\n{done.stderr[-3000:]}")
            res = json.loads(done.stdout.strip().splitlines()[-1])
            results[mode].append(res)
            print(f"round {r + 1} {mode:>13}: max |w1 - w2| {res['max_abs_diff']:.3g}, straight vs resumed "
                  f"{res['resume_max_abs_diff']:.3g}, over {res['variables']} arrays; s/step "
                  f"{', '.join(f'{s:.2f}' for s in res['seconds_per_step'])}", flush=True)
    from cxr_runtime.machine import cpu_name

    model = cpu_name()
    summary = {mode: {"bitwise": all(x["max_abs_diff"] == 0 for x in rs),
                      "max_abs_diff": max(x["max_abs_diff"] for x in rs),
                      "resume_bitwise": all(x["resume_max_abs_diff"] == 0 for x in rs),
                      "resume_max_abs_diff": max(x["resume_max_abs_diff"] for x in rs),
                      "median_seconds_per_step": statistics.median(s for x in rs for s in x["seconds_per_step"])}
               for mode, rs in results.items()}
    ratio = summary["deterministic"]["median_seconds_per_step"] / summary["default"]["median_seconds_per_step"]
    out = {"cpu": model, "preset": args.preset, "steps": args.steps, "rounds": args.rounds, "runs": results,
           "summary": summary, "deterministic_over_default": ratio}
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print("\n| mode | two straight runs | largest difference | straight vs paused and resumed | largest difference "
          "| median s/step |\n|---|---|---|---|---|---|")
    for mode, s in summary.items():
        print(f"| {mode} | {'bitwise equal' if s['bitwise'] else 'differ'} | {s['max_abs_diff']:.3g} | "
              f"{'bitwise equal' if s['resume_bitwise'] else 'differ'} | {s['resume_max_abs_diff']:.3g} | "
              f"{s['median_seconds_per_step']:.2f} |")
    print(f"\n--deterministic / default step time: {ratio:.2f} ({model}; {args.steps} steps x 3 runs x "
          f"{args.rounds} rounds per mode)")


if __name__ == "__main__":
    main()
