"""A utility plan: what synthetic images do for a classifier in the low-data regime, end to end.

For each real subset size N (images per class, nested as `cxr-utility protocols` takes them):
`cxr-utility subset` writes the subset, `cxr-train` trains a labelled generator on it alone,
`cxr-export` exports it, `cxr-runtime sample --classes` draws `samples` images of each class and
`cxr-runtime audit` checks them against that subset; then one `cxr-utility protocols` trains the
classifier protocols with every size's synthetic set. Every stage is skipped when its output is
complete and resumes when it is not, so the same command continues an interrupted plan.

    [utility]
    name = "utility-quick"                  # folder under the run root
    real = "../shared/data/kermany-cxr/train"
    test = "../shared/data/kermany-cxr/heldout"
    sizes = [10, 25, 50, 138]
    preset = "quick"                        # the generator's preset and flags
    flags = []
    seed = 0
    samples = 500                           # synthetic images per class
    seeds = 5                               # classifier seeds per arm
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from cxr_runtime.images import class_layout
from cxr_sweep.errors import SweepError
from cxr_sweep.stages import Runner, command, display

UTILITY_KEYS = {"name", "real", "test", "sizes", "preset", "flags", "seed", "samples", "seeds", "classifier_steps"}
SUMMARY = "utility-plan.json"


@dataclass(frozen=True)
class UtilityPlan:
    name: str
    real: Path
    test: Path
    sizes: tuple[int, ...]
    preset: str = "quick"
    flags: tuple[str, ...] = ()
    seed: int = 0
    samples: int = 500
    seeds: int = 5
    classifier_steps: int | None = None
    path: Path = field(default=Path("."), compare=False)


def is_utility_plan(raw: dict) -> bool:
    return "utility" in raw


def load_utility_plan(raw: dict, path: Path) -> UtilityPlan:
    """The [utility] table of a plan file; SweepError names the problem."""
    table = raw.get("utility")
    if set(raw) != {"utility"} or not isinstance(table, dict):
        raise SweepError(f"plan {path}: a utility plan holds one [utility] table and nothing else")
    unknown = set(table) - UTILITY_KEYS
    if unknown:
        raise SweepError(f"plan {path}: unknown [utility] key(s) {sorted(unknown)}; known: {sorted(UTILITY_KEYS)}")
    missing = {"name", "real", "test", "sizes"} - set(table)
    if missing:
        raise SweepError(f"plan {path}: [utility] needs {sorted(missing)}")
    name = table["name"]
    if not isinstance(name, str) or not name or "/" in name or name.startswith("."):
        raise SweepError(f"plan {path}: name must be a plain folder name, not {name!r}")
    sizes = table["sizes"]
    if not (isinstance(sizes, list) and sizes and all(isinstance(n, int) and n >= 2 for n in sizes)):
        raise SweepError(f"plan {path}: sizes must be a list of integers >= 2 (images per class), not {sizes!r}")
    for key, lo in (("seed", 0), ("samples", 12), ("seeds", 1), ("classifier_steps", 1)):
        v = table.get(key)
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < lo):
            raise SweepError(f"plan {path}: {key} must be an integer >= {lo}, not {v!r}")
    flags = table.get("flags", [])
    if not (isinstance(flags, list) and all(isinstance(f, str) for f in flags)):
        raise SweepError(f"plan {path}: flags must be a list of strings")
    def folder(key: str) -> Path:  # relative to where cxr-sweep runs, as a training plan's data
        return Path(os.path.expanduser(table[key])).resolve()

    return UtilityPlan(name=name, real=folder("real"), test=folder("test"), sizes=tuple(sorted(set(sizes))),
                       preset=table.get("preset", "quick"), flags=tuple(flags), seed=table.get("seed", 0),
                       samples=table.get("samples", 500), seeds=table.get("seeds", 5),
                       classifier_steps=table.get("classifier_steps"), path=path)


def _classes(real: Path) -> tuple[str, ...]:
    classes = class_layout(real)
    if not classes:
        raise SweepError(f"real folder {real} must hold one subfolder of images per class (NORMAL/, PNEUMONIA/)")
    return classes


def batch_size(preset_batch: int, per_class: int, classes: int) -> int:
    """The preset's batch, or less when the subset is smaller: a labelled batch holds B / classes
    images of each class, so B <= per_class * classes, and B is a multiple of the classes."""
    b = min(preset_batch, per_class * classes)
    return b - b % classes


def _run_folder(base: Path):
    """The newest cxr-train run under `base` that got as far as its config.json, or None."""
    from cxr_training.runs import RunFolder

    runs = [r for r in RunFolder.under(base) if r.started]
    return runs[-1] if runs else None


class UtilityJob:
    """A utility plan carried out in `root / plan.name`: its stages, each through `runner`."""

    def __init__(self, plan: UtilityPlan, root: Path, runner: Runner | None = None, log=None):
        self.plan, self.root = plan, Path(root)
        self.folder = self.root / plan.name
        self.log = log or (lambda m: print(m, file=sys.stderr, flush=True))
        self.runner = runner or Runner(self.log)
        self.stages_log = self.folder / "stages.log"

    def _call(self, argv: list[str], ok=(0,)) -> int:
        self.log(f"cxr-sweep: {self.plan.name}: {' '.join(display(argv)[:2])} ...")
        return self.runner.call(argv, self.stages_log, ok=ok)

    def generator(self, n: int, classes: list[str]) -> dict:
        """Subset, generator, export, samples and audit of size n; returns what the summary keeps."""
        from cxr_training.config import preset

        p, f = self.plan, self.folder
        real_n, gan, syn, audit = f / f"real-{n}", f / f"gan-{n}", f / f"syn-{n}", f / f"audit-{n}"
        self._call(command("cxr-utility", "subset", "--real", p.real, "--per-class", n, "--out", real_n))
        run = _run_folder(gan)
        t0 = time.time()
        if run is None:
            bs = batch_size(preset(p.preset).batch_size, n, len(classes))
            self._call(command("cxr-train", "--preset", p.preset, "--seed", p.seed, *p.flags, "--batch-size", bs,
                               "--data", real_n, "--out", gan))
        elif not run.finished:
            self._call(command("cxr-train", "--resume", run.path))
        run = _run_folder(gan)
        if run is None or not run.finished:
            raise SweepError(f"{gan}: training ended without a generator")
        model = gan / "generator.onnx"
        if not model.is_file():
            self._call(command("cxr-export", run.path, "--out", model))
        self._call(command("cxr-runtime", "sample", "--model", model, "--seed", 0, "--out", syn,
                           "--classes", ",".join(f"{c}={p.samples}" for c in classes)))
        if not all((audit / c / "summary.json").is_file() for c in classes):
            self._call(command("cxr-runtime", "audit", "--fake", syn, "--train", real_n, "--heldout", p.test,
                               "--out", audit), ok=(0, 1))
        flagged = {c: json.loads((audit / c / "summary.json").read_text())["flagged"] for c in classes}
        return {"per_class": n, "run": str(run.path), "model": str(model), "samples": str(syn),
                "audit_flagged": flagged, "seconds": round(time.time() - t0, 1)}

    def run(self) -> Path:
        p = self.plan
        for label, folder in (("real", p.real), ("test", p.test)):
            if not folder.is_dir():
                raise SweepError(f"the plan's {label} folder {folder} does not exist")
        classes = _classes(p.real)
        self.folder.mkdir(parents=True, exist_ok=True)
        generators = [self.generator(n, classes) for n in p.sizes]
        out = self.folder / "utility.json"
        argv = command("cxr-utility", "protocols", "--real", p.real, "--test", p.test,
                       "--sizes", ",".join(map(str, p.sizes)), "--seeds", p.seeds,
                       "--synthetic-per-class", p.samples, "--out", out)
        for g in generators:
            argv += ["--synthetic", f"{g['per_class']}={g['samples']}"]
        if p.classifier_steps:
            argv += ["--steps", str(p.classifier_steps)]
        self._call(argv)
        from cxr_runtime.io import atomic_write_json
        from cxr_runtime.machine import cpu_name

        atomic_write_json(self.folder / SUMMARY, {
            "plan": str(p.path), "generators": generators, "utility": str(out), "cpu": cpu_name(),
            "preset": p.preset, "flags": list(p.flags), "seed": p.seed,
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
        self.log(f"cxr-sweep: {p.name}: done; {out} and {out.with_suffix('.md')}, summary in {self.folder / SUMMARY}")
        return out
