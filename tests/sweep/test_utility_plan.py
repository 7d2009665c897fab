"""cxr-sweep with a [utility] plan: a generator per real subset, trained on that subset alone,
exported, sampled per class and audited, then the classifier protocols with every size's samples;
the same command again redoes nothing that is complete; bad plans are one line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from cxr_sweep import SweepError
from cxr_sweep.utility_plan import batch_size, load_utility_plan

PLAN = """
[utility]
name = "u"
real = "{real}"
test = "{test}"
sizes = [6, 4]
preset = "smoke"
samples = 12
seeds = 1
classifier_steps = 2
"""


def _labelled(kermany, tmp_path, split, n) -> Path:
    root = tmp_path / split
    for c in ("NORMAL", "PNEUMONIA"):
        (root / c).mkdir(parents=True)
        for p in sorted((kermany / split / c).iterdir())[:n]:
            (root / c / p.name).symlink_to(p)
    return root


def _sweep(plan: Path, runs: Path):
    return subprocess.run([sys.executable, "-m", "cxr_sweep.cli", str(plan), "--runs", str(runs)],
                          capture_output=True, text=True, timeout=1200)


def test_a_utility_plan_trains_a_generator_per_subset_then_the_protocols(kermany, tmp_path):
    real, test = _labelled(kermany, tmp_path, "train", 8), _labelled(kermany, tmp_path, "heldout", 6)
    plan = tmp_path / "u.toml"
    plan.write_text(PLAN.format(real=real, test=test))
    runs = tmp_path / "runs"
    r = _sweep(plan, runs)
    assert r.returncode == 0, r.stderr[-3000:]
    folder = runs / "u"
    summary = json.loads((folder / "utility-plan.json").read_text())
    assert [g["per_class"] for g in summary["generators"]] == [4, 6]
    for g in summary["generators"]:
        n = g["per_class"]
        # the generator saw that subset and nothing more: its run's data is the subset folder
        config = json.loads(next((folder / f"gan-{n}").glob("0000*/config.json")).read_text())
        assert config["data"]["count"] == 2 * n and config["config"]["classes"] == ["NORMAL", "PNEUMONIA"]
        assert config["config"]["batch_size"] == 4  # smoke's batch; subsets hold at least 4 per class
        assert sorted(p.name for p in (folder / f"real-{n}").iterdir()) == ["NORMAL", "PNEUMONIA", "subset.json"]
        for c in ("NORMAL", "PNEUMONIA"):
            assert len(list((folder / f"syn-{n}" / c).glob("sample-*.png"))) == 12
        assert set(g["audit_flagged"]) == {"NORMAL", "PNEUMONIA"}
    result = json.loads((folder / "utility.json").read_text())
    arms = {(a["arm"], a["per_class"]) for a in result["arms"]}
    assert {("TSTR", 4), ("real+synthetic", 4), ("TSTR", 6), ("real+synthetic", 6), ("TRTR", 4)} <= arms
    assert set(result["label_fidelity"]) == {"4", "6"}
    # again: every stage's output is complete, nothing is trained again
    stamp = {p: p.stat().st_mtime_ns for p in folder.glob("gan-*/generator.onnx")}
    r = _sweep(plan, runs)
    assert r.returncode == 0, r.stderr[-3000:]
    assert {p: p.stat().st_mtime_ns for p in folder.glob("gan-*/generator.onnx")} == stamp
    assert "cxr-train" not in r.stderr and "cxr-export" not in r.stderr
    log = (folder / "stages.log").read_text()
    assert log.count("$ cxr-utility protocols ") == 2  # the protocols ran twice; the second trained nothing
    again = log.split("$ cxr-utility protocols ")[-1]
    assert "(cached)" in again and "(trained)" not in again


def test_the_batch_shrinks_to_what_a_small_subset_holds():
    assert batch_size(32, 10, 2) == 20 and batch_size(32, 138, 2) == 32 and batch_size(32, 5, 3) == 15
    assert batch_size(32, 7, 2) == 14 and batch_size(4, 6, 2) == 4


@pytest.mark.parametrize("body, message", [
    ('[utility]\nname = "u"\nreal = "r"\ntest = "t"\n', "needs ['sizes']"),
    ('[utility]\nname = "u"\nreal = "r"\ntest = "t"\nsizes = [1]\n', "integers >= 2"),
    ('[utility]\nname = "a/b"\nreal = "r"\ntest = "t"\nsizes = [4]\n', "plain folder name"),
    ('[utility]\nname = "u"\nreal = "r"\ntest = "t"\nsizes = [4]\nsamples = 3\n', "samples must be"),
    ('[utility]\nname = "u"\nreal = "r"\ntest = "t"\nsizes = [4]\nwhat = 1\n', "unknown [utility] key"),
    ('data = "d"\n[utility]\nname = "u"\nreal = "r"\ntest = "t"\nsizes = [4]\n', "nothing else"),
])
def test_bad_utility_plans_say_what_is_wrong(tmp_path, body, message):
    import tomllib

    with pytest.raises(SweepError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_utility_plan(tomllib.loads(body), tmp_path / "p.toml")


def test_a_missing_real_folder_is_one_line(tmp_path):
    plan = tmp_path / "u.toml"
    plan.write_text(PLAN.format(real=tmp_path / "none", test=tmp_path / "none"))
    r = _sweep(plan, tmp_path / "runs")
    assert r.returncode == 2 and "does not exist" in r.stderr and "Traceback" not in r.stderr
