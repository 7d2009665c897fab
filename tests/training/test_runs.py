"""RunFolder, the one reader of a run folder: the recorded config and its errors, finished, the
generator files and their provenance (the raw-weights rule), the newest checkpoint's step, and
the listing of run folders under a root."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from cxr_runtime.errors import CxrError
from cxr_training.config import preset
from cxr_training.errors import RunFolderError, TrainingError
from cxr_training.runs import RunFolder, newest_run, provenance


def _started(path, cfg=None):
    path.mkdir(parents=True)
    cfg = cfg or preset("smoke")
    (path / "config.json").write_text(json.dumps({"run_id": path.name, "config": cfg.to_dict(),
                                                  "data": {"root": "/data", "sha256": "ab" * 32, "count": 8}}))
    return RunFolder(path)


def test_record_and_config_are_read_from_config_json(tmp_path):
    cfg = preset("smoke").replace(seed=7)
    run = _started(tmp_path / "00001-smoke", cfg)
    assert run.started and run.name == "00001-smoke"
    assert run.record["data"]["count"] == 8
    assert run.config == cfg


@pytest.mark.parametrize("content, message", [
    (None, "no readable config.json"),
    ("{torn", "no readable config.json"),
    (json.dumps({"run_id": "x"}), "holds no valid config"),
    (json.dumps({"config": {"no_such_field": 1}}), "holds no valid config"),
])
def test_a_missing_or_broken_config_json_is_one_clear_error(tmp_path, content, message):
    folder = tmp_path / "00001-smoke"
    folder.mkdir()
    if content is not None:
        (folder / "config.json").write_text(content)
    run = RunFolder(folder)
    assert run.started == (content is not None)
    with pytest.raises(RunFolderError, match=message) as e:
        run.config  # noqa: B018
    assert str(folder) in str(e.value)
    assert isinstance(e.value, TrainingError) and isinstance(e.value, CxrError) and e.value.exit_code == 2
    if content is None or content == "{torn":
        with pytest.raises(RunFolderError):
            run.record  # noqa: B018


def test_resume_of_a_folder_without_config_json_says_so(tmp_path):
    from cxr_training.train import resume_run

    (tmp_path / "00001-smoke").mkdir()
    with pytest.raises(TrainingError, match=r"cannot resume .*00001-smoke: no readable config.json"):
        resume_run(tmp_path / "00001-smoke")


def test_finished_means_the_final_generator_and_its_provenance_are_there(tmp_path):
    run = _started(tmp_path / "00001-smoke")
    (run.path / "checkpoints" / "epoch-0002").mkdir(parents=True)
    (run.path / "checkpoints" / "epoch-0002" / "meta.json").write_text(json.dumps({"step": 6}))
    assert not run.finished  # trained to the end, but no generator.keras yet
    (run.path / "generator.keras").write_bytes(b"k")
    assert not run.finished  # the final save cut short before generator.json
    (run.path / "generator.json").write_text(json.dumps({"step": 6}))
    assert run.finished
    snap = run.snapshot(3)
    snap.mkdir(parents=True)
    (snap / "generator.keras").write_bytes(b"k")
    assert run.generator_path(step=3) == snap / "generator.keras"


def test_raw_weights_take_the_runs_provenance(tmp_path):
    run = _started(tmp_path / "00001-smoke")
    info = {"model": "generator.keras", "weights": "ema", "raw_model": "generator-raw.keras", "step": 6,
            "config": {"classes": ["A", "B"]}, "data_sha256": "cd" * 32}
    (run.path / "generator.json").write_text(json.dumps(info))
    (run.path / "generator.keras").write_bytes(b"k")
    assert run.generator_path("raw") == run.path / "generator.keras"  # no raw file: the shipped weights are G's
    (run.path / "generator-raw.keras").write_bytes(b"k")
    assert run.generator_path("ema") == run.path / "generator.keras"
    assert run.generator_path("raw") == run.path / "generator-raw.keras"
    assert run.provenance("ema") == info
    raw = run.provenance("raw")
    assert raw == {**{k: v for k, v in info.items() if k != "raw_model"}, "model": "generator-raw.keras",
                   "weights": "raw"}
    assert provenance(run.path / "generator-raw.keras") == raw
    # a Keras file that generator.json does not name has no provenance
    (run.path / "other.keras").write_bytes(b"k")
    assert provenance(run.path / "other.keras") == {}
    # a file's own <name>.json comes first
    (run.path / "other.json").write_text(json.dumps({"step": 1}))
    assert provenance(run.path / "other.keras") == {"step": 1}
    (run.path / "generator.json").write_text("{torn")
    with pytest.raises(RunFolderError, match="no readable generator.json"):
        provenance(run.path / "generator-raw.keras")


def test_checkpoint_step_is_the_newest_complete_checkpoint(tmp_path):
    run = _started(tmp_path / "00001-smoke")
    assert run.checkpoint_step == 0
    root = run.path / "checkpoints"
    for name, step in (("epoch-0001", 3), ("epoch-0002-step-000000005", 5)):
        (root / name).mkdir(parents=True)
        (root / name / "meta.json").write_text(json.dumps({"step": step}))
    (root / ".tmp-epoch-0003-x").mkdir()  # an interrupted write is no checkpoint
    (root / ".tmp-epoch-0003-x" / "meta.json").write_text(json.dumps({"step": 9}))
    (root / "epoch-0004").mkdir()  # no meta.json: not complete
    assert run.checkpoint_step == 5


def test_history_is_read_history(tmp_path):
    run = _started(tmp_path / "00001-smoke")
    assert run.history == []
    (run.path / "metrics.jsonl").write_text(json.dumps({"epoch": 1, "step": 3, "precision": 0.5}) + "\n{torn\n")
    assert run.history == [{"epoch": 1, "step": 3, "d_precision": 0.5}]


def test_listing_ignores_what_is_not_a_run_folder(tmp_path):
    assert RunFolder.under(tmp_path / "absent") == [] and newest_run(tmp_path / "absent") is None
    for name in ("00002-quick", "00010-smoke", "00001-smoke", "notes", "123456-long", "0001-short", "00003"):
        (tmp_path / name).mkdir()
    (tmp_path / "00004-file").write_text("not a folder")
    assert [r.name for r in RunFolder.under(tmp_path)] == ["00001-smoke", "00002-quick", "00010-smoke"]
    assert newest_run(tmp_path) == tmp_path / "00010-smoke"
    assert RunFolder(str(tmp_path / "00001-smoke")) == RunFolder.under(tmp_path)[0]


def test_reading_a_run_folder_needs_no_tensorflow():
    code = "import sys, cxr_training.runs; print('tensorflow' in sys.modules, 'keras' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
