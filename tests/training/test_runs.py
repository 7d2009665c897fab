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


def _finished(path, cfg):
    """A finished run of `cfg` as cxr-train leaves it: the last checkpoint and the final generator."""
    run = _started(path, cfg)
    ckpt = run.path / "checkpoints" / f"epoch-{cfg.epochs:04d}"
    ckpt.mkdir(parents=True)
    (ckpt / "meta.json").write_text(json.dumps({"step": cfg.total_steps}))
    for name in ("generator.keras", "generator-raw.keras"):
        (run.path / name).write_bytes(name.encode())
    (run.path / "generator.json").write_text(json.dumps({"step": cfg.total_steps}))
    return run


RECIPE_RUN = preset("smoke").replace(epochs=2, steps_per_epoch=3, lr_schedule="constant", progressive=False)


def test_a_finished_run_grows_its_final_generator_becomes_a_snapshot_and_config_json_says_so(tmp_path):
    from cxr_training.runs import lengthen

    run = _finished(tmp_path / "00001-smoke", RECIPE_RUN)
    logs = []
    assert lengthen(run, 5, [6, 9], log=logs.append)  # its end may be named: it is kept anyway
    assert not run.finished and not (run.path / "generator.keras").exists()
    keep = run.snapshot(6)
    assert (keep / "generator.keras").read_bytes() == b"generator.keras"
    assert (keep / "generator-raw.keras").read_bytes() == b"generator-raw.keras"
    assert json.loads((keep / "generator.json").read_text()) == {"step": 6}
    grown = run.config
    assert grown == RECIPE_RUN.replace(epochs=5, snapshot_steps=(6, 9))
    record = run.record
    assert record["config_hash"] == grown.hash() != RECIPE_RUN.hash()
    assert record["lengthened"][0]["from_epochs"] == 2 and record["lengthened"][0]["to_epochs"] == 5
    assert record["lengthened"][0]["at_step"] == 6 and record["data"]["count"] == 8  # the rest kept
    assert any("lengthened from 2 to 5 epochs (6 to 15 steps)" in m for m in logs)
    assert not lengthen(run, 5, [9])  # already so: nothing to do
    assert len(run.record["lengthened"]) == 1


def test_an_unfinished_run_grows_and_a_snapshot_already_kept_is_not_copied_again(tmp_path):
    from cxr_training.runs import lengthen

    run = _started(tmp_path / "00001-smoke", RECIPE_RUN.replace(epochs=4))
    (run.path / "checkpoints" / "epoch-0001").mkdir(parents=True)
    (run.path / "checkpoints" / "epoch-0001" / "meta.json").write_text(json.dumps({"step": 3}))
    assert lengthen(run, 6, [], log=lambda m: None)
    assert run.config.epochs == 6 and run.config.snapshot_steps == () and not run.snapshot(12).exists()

    done = _finished(tmp_path / "00002-smoke", RECIPE_RUN.replace(snapshot_steps=(6,)))
    done.snapshot(6).mkdir(parents=True)
    (done.snapshot(6) / "generator.keras").write_bytes(b"the snapshot's own")
    (done.snapshot(6) / "generator.json").write_text("{}")
    assert lengthen(done, 3, [], log=lambda m: None)
    assert (done.snapshot(6) / "generator.keras").read_bytes() == b"the snapshot's own"
    assert done.config.snapshot_steps == (6,) and not done.finished


@pytest.mark.parametrize("cfg, epochs, steps, message", [
    (RECIPE_RUN, 1, [], "a run is not shortened"),
    (RECIPE_RUN.replace(lr_schedule="decay"), 4, [], "learning rate schedule \\(decay\\)"),
    (RECIPE_RUN.replace(progressive=True), 4, [], "progressive resizing"),
    (RECIPE_RUN, 4, [3], "snapshot steps \\[3\\] are not after the newest checkpoint"),
    (RECIPE_RUN, 4, [7], "snapshot_steps must be epoch ends"),
    (RECIPE_RUN, 4, [15], "within the run's 12 steps"),
])
def test_a_run_that_cannot_grow_so_is_refused_and_left_as_it_was(tmp_path, cfg, epochs, steps, message):
    from cxr_training.runs import lengthen

    run = _finished(tmp_path / "00001-smoke", cfg)
    before = {p.relative_to(run.path): p.read_bytes() for p in run.path.rglob("*") if p.is_file()}
    with pytest.raises(TrainingError, match=message):
        lengthen(run, epochs, steps, log=lambda m: None)
    assert {p.relative_to(run.path): p.read_bytes() for p in run.path.rglob("*") if p.is_file()} == before


def test_a_lengthening_cut_short_after_the_final_files_went_is_finished_by_the_next_try(tmp_path, monkeypatch):
    """A crash after the final generator became a snapshot and before config.json grew: the next
    `--epochs` try still counts the old end among the snapshot steps."""
    from cxr_training import runs

    run = _finished(tmp_path / "00001-smoke", RECIPE_RUN)

    def crash(*a, **k):
        raise OSError("disk gone")

    with monkeypatch.context() as m:
        m.setattr(runs, "atomic_write_json", crash)
        with pytest.raises(OSError):
            runs.lengthen(run, 4, [], log=lambda msg: None)
    assert not run.finished and run.config.epochs == 2 and (run.snapshot(6) / "generator.json").is_file()
    assert runs.lengthen(run, 4, [], log=lambda msg: None)
    assert run.config.epochs == 4 and run.config.snapshot_steps == (6,)
    assert (run.snapshot(6) / "generator.keras").read_bytes() == b"generator.keras"
