"""results.jsonl: the rows, written exactly once (replaced when the judges change), and the
markdown tables of docs/results.md."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from cxr_runtime.io import atomic_write_text

RESULTS = "results.jsonl"
SUPERSEDED = "results.superseded.jsonl"  # rows replaced because their judges changed (append-only)
# weights variants of the shipped weights, exported at a latent scale calibrated on the training
# images: suffix -> cxr-export --latent-scale criterion
SCALED = {"-scaled": "auto", "-diverse": "diversity"}


# metric keys of rows written by the first version of cxr-sweep, read under today's names
_LEGACY_METRIC_KEYS = {"diversity": "diversity_ssim", "diversity_real": "diversity_ssim_real"}


def read_results(root: Path) -> list[dict]:
    path = root / RESULTS
    if not path.is_file():
        return []
    return [_under_todays_names(json.loads(line)) for line in path.read_text().splitlines() if line.strip()]


def _under_todays_names(row: dict) -> dict:
    """A row as today's sweep writes it: metric keys of the first version renamed; the baseline
    (the training images scored as generated ones) under `baseline`, where rows written before
    it had its own word hold it as `reference` (per class too); kid_se of judges version 1,
    which resampled the generated images only, as kid_se_generated_only."""
    if isinstance(row.get("metrics"), dict):
        row["metrics"] = {_LEGACY_METRIC_KEYS.get(k, k): v for k, v in row["metrics"].items()}
    for part in (row, *(row.get("classes") or {}).values()):
        if isinstance(part, dict) and "reference" in part and "baseline" not in part:
            part["baseline"] = part.pop("reference")
    if row.get("judges", 1) == 1:
        for part in ("metrics", "baseline"):
            if isinstance(row.get(part), dict) and "kid_se" in row[part]:
                row[part]["kid_se_generated_only"] = row[part].pop("kid_se")
    return row


def baseline_of(evaluation: dict) -> dict:
    """The baseline scores of an `evaluate --json` result (score.json's "quality"): written as
    `quality_baseline`, as `quality_reference` before the baseline had its own word."""
    return evaluation.get("quality_baseline", evaluation.get("quality_reference", {}))


def current(row: dict) -> bool:
    """Whether a row was scored by today's judges (metrics, intervals, audit)."""
    from cxr_runtime.quality import JUDGES_VERSION

    return row.get("judges", 1) == JUDGES_VERSION


def append_row(root: Path, row: dict) -> bool:
    """Add `row` to results.jsonl unless a row with its key is there; the whole file is
    replaced atomically, so it is never torn and never holds a key twice. True if written.
    A row of the same key scored by older judges, or of another model (its run trained again),
    is replaced, and kept in SUPERSEDED."""
    rows = read_results(root)
    old = [r for r in rows if r.get("key") == row["key"]]
    same_model = [r for r in old if r.get("model_sha256") in (None, row.get("model_sha256"))]
    if any(current(r) for r in same_model) or (old and not current(row)):
        return False
    if old:
        with open(root / SUPERSEDED, "a") as f:
            f.writelines(json.dumps(r) + "\n" for r in old)
    text = "".join(json.dumps(r) + "\n" for r in [*(r for r in rows if r.get("key") != row["key"]), row])
    atomic_write_text(root / RESULTS, text)
    return True


def _weights(row: dict) -> str:
    """The weights cell: `ema`, `raw`, or `ema-scaled (x1.2)` with the calibrated latent scale."""
    scale = row.get("latent_scale", 1.0)
    return row["weights"] + (f" (x{scale:g})" if row["weights"].endswith(tuple(SCALED)) else "")


def row_key(name: str, step: int, weights: str) -> str:
    return f"{name}@{step}:{weights}"


def _audit_summary(s: dict) -> dict:
    out = {"flagged": s["flagged"], "generated": s["generated"], "threshold": s["threshold"],
           "nn_ncc_p50": s["nn_ncc"]["p50"], "nn_ncc_max": s["nn_ncc"]["max"]}
    if "nn_detail" in s:  # the registered audit (summaries before it had the shift-tolerant NCC only)
        out["detail_threshold"] = s["detail_threshold"]
        out["nn_detail_p50"], out["nn_detail_max"] = s["nn_detail"]["p50"], s["nn_detail"]["max"]
    if "heldout" in s:
        out["heldout_nn_ncc_p50"] = s["heldout"]["nn_ncc"]["p50"]
        out["heldout_nn_ncc_max"] = s["heldout"]["nn_ncc"]["max"]
        out["heldout_flagged_share"] = s["heldout"]["flagged_share"]
        if "nn_detail" in s["heldout"]:
            out["heldout_nn_detail_max"] = s["heldout"]["nn_detail"]["max"]
    return out


def _cell(m, values: dict) -> str:
    if m.key not in values:
        return "-"
    text = m.text(values, m.short)  # the value and its 95 % interval's half-width (both sets resampled)
    if m.real_key and m.real_key in values:
        text += f" ({values[m.real_key]:{m.short}})"
    return text


def per_class(rows: list[dict]) -> list[dict]:
    """A labelled plan's row (one model, `classes`: each class's metrics, baseline and audit) as one
    row per class, `run` marked with the class, `heldout` its class folder; other rows as they are."""
    out = []
    for r in rows:
        if not r.get("classes"):
            out.append(r)
            continue
        for c, v in r["classes"].items():
            out.append({**r, "run": f"{r['run']} [{c}]", "class": c, "metrics": v["metrics"],
                        "baseline": v["baseline"], "audit": v["audit"],
                        "heldout": str(Path(r.get("heldout", "")) / c)})
    return out


def summary(row: dict) -> str:
    from cxr_runtime.quality import QUALITY_METRICS

    return "; ".join(" ".join(f"{m.label} {_cell(m, r['metrics'])}" for m in QUALITY_METRICS)
                     + f" audit flags {r['audit']['flagged']}" + (f" [{r['class']}]" if r.get("class") else "")
                     for r in per_class([row]))


def table(rows: list[dict]) -> str:
    """The rows as a markdown table (docs/results.md): the metric table's columns, the audit,
    the cost; each held-out folder's baseline row (the training images scored as generated
    ones) once at the end."""
    from cxr_runtime.quality import QUALITY_METRICS

    rows = per_class(rows)
    labels = [m.label + (" (real)" if m.real_key else "") for m in QUALITY_METRICS]
    head = ["run", "step", "weights", *labels, "audit flags", "s/step", "train h", "CPU"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        sps = f"{r['seconds_per_step']:.2f}" if r.get("seconds_per_step") else "-"
        cells = [r["run"], str(r["step"]), _weights(r), *(_cell(m, r["metrics"]) for m in QUALITY_METRICS),
                 f"{r['audit']['flagged']}/{r['audit']['generated']}", sps, f"{r['train_seconds'] / 3600:.2f}",
                 ", ".join(r["cpu"])]
        lines.append("| " + " | ".join(cells) + " |")
    lines += _baseline_lines(rows, lead=3, trail=4)
    return "\n".join(lines)


def recipe_hash(config: dict) -> str:
    """What a run trains apart from its seed: the hash of its config with the seed (and the steps
    it keeps snapshots at) set aside. Runs that share it are seeds of one recipe, however their
    plan entries spell it (`--augment fixed` or a preset whose default it is)."""
    from cxr_training.config import Config

    return Config.from_dict(config).replace(seed=0, snapshot_steps=()).hash()


def _recipe(row: dict) -> tuple:
    """What a row's run trained, apart from its seed and name: rows that share it are seeds of one
    recipe. Rows written before rows carried `recipe_hash` get it from their run's record (config.json)
    while that is on disk, else from their plan entry (preset, flags, length)."""
    from cxr_training.errors import RunFolderError
    from cxr_training.runs import RunFolder

    key = row.get("recipe_hash")
    if key is None and row.get("run_folder"):
        try:
            key = recipe_hash(RunFolder(row["run_folder"]).record["config"])
        except (RunFolderError, ValueError, KeyError, TypeError):
            key = None
    if key is not None:
        return (key, row["step"], row["weights"], row.get("class"))
    e = row.get("entry", {})
    return (e.get("preset"), tuple(e.get("flags", ())), e.get("steps"), row["step"], row["weights"], row.get("class"))


def _baseline_lines(rows: list[dict], lead: int, trail: int) -> list[str]:
    """One line per held-out folder: the training images scored against it as if generated (what
    a generator reproducing real X-rays of this population would reach), in a table whose metric
    columns come after `lead` cells and before `trail` ones."""
    from cxr_runtime.quality import QUALITY_METRICS

    bases = {r["heldout"]: r["baseline"] for r in rows if r.get("baseline") and r.get("heldout")}
    lines = []
    for held, base in bases.items():
        cells = [f"*the training images vs {'/'.join(Path(held).parts[-2:])} (baseline)*", *[""] * (lead - 1),
                 *(_cell(m, base) for m in QUALITY_METRICS), *[""] * trail]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def seed_table(rows: list[dict]) -> str:
    """Rows of the same recipe (the run's config apart from its seed, at one step and weights) on
    different seeds, as one markdown line each, seeds in order: the runs, the preset and flags
    (the most explicit spelling among the runs' plan entries), the mean of every metric with its
    range over the seeds (min-max), the audit flags summed over the seeds, the median s/step per
    seed, averaged; then the baseline line of each held-out folder."""
    from cxr_runtime.quality import QUALITY_METRICS

    rows = per_class(rows)

    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault(_recipe(r), []).append(r)
    head = ["runs", "preset", "flags", "step", "weights", "seeds", *[m.label for m in QUALITY_METRICS],
            "audit flags", "s/step", "CPU"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for group in groups.values():
        group = sorted(group, key=lambda r: (r.get("entry", {}).get("seed", -1), r["run"]))
        flags = max((r.get("entry", {}).get("flags", ()) for r in group), key=len)
        step, weights = group[0]["step"], group[0]["weights"]
        cells = [", ".join(r["run"] for r in group), str(group[0].get("entry", {}).get("preset")),
                 " ".join(flags) or "-", str(step), weights,
                 ", ".join(str(r.get("entry", {}).get("seed", "?")) for r in group)]
        for m in QUALITY_METRICS:
            values = [r["metrics"][m.key] for r in group if m.key in r["metrics"]]
            if not values:
                cells.append("-")
                continue
            text = f"{statistics.fmean(values):{m.short}}"
            if len(values) > 1:
                text += f" ({min(values):{m.short}}-{max(values):{m.short}})"
            real = [r["metrics"][m.real_key] for r in group if m.real_key and m.real_key in r["metrics"]]
            if real:
                text += f", real {statistics.fmean(real):{m.short}}"
            cells.append(text)
        cells.append(f"{sum(r['audit']['flagged'] for r in group)}/{sum(r['audit']['generated'] for r in group)}")
        sps = [r["seconds_per_step"] for r in group if r.get("seconds_per_step")]
        cells.append(f"{statistics.fmean(sps):.2f}" if sps else "-")
        cells.append(", ".join(sorted({c for r in group for c in r["cpu"]})))
        lines.append("| " + " | ".join(cells) + " |")
    lines += _baseline_lines(rows, lead=6, trail=3)
    return "\n".join(lines)


