"""Labelled runs: a data folder with one subfolder per class trains one generator for all
classes (docs/training.md, "Labelled runs"): the layout rule, balanced batches, G and D told the
class, the monitor per class, resume; a folder of images alone trains exactly as before."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cxr_training.config import preset
from cxr_training.data import MAX_CLASSES, class_layout, labels_of
from cxr_training.errors import TrainingError
from cxr_training.tfenv import import_tf

tf, keras = import_tf()


@pytest.fixture
def labelled(kermany, tmp_path):
    """train/{NORMAL,PNEUMONIA} and held/{NORMAL,PNEUMONIA}: 8 and 6 images of each class (symlinks)."""
    for split, source, n in (("labelled-train", "train", 8), ("labelled-held", "heldout", 6)):
        for c in ("NORMAL", "PNEUMONIA"):
            folder = tmp_path / split / c
            folder.mkdir(parents=True)
            for p in sorted((kermany / source / c).iterdir())[:n]:
                (folder / p.name).symlink_to(p)
    return tmp_path / "labelled-train", tmp_path / "labelled-held"


def test_the_layout_rule(labelled, tmp_path, few_real):
    train, _ = labelled
    assert class_layout(train) == ("NORMAL", "PNEUMONIA")
    assert class_layout(few_real) == ()  # a folder of images: unlabelled
    mixed = tmp_path / "mixed"
    (mixed / "a").mkdir(parents=True)
    (mixed / "b").mkdir()
    for i, p in enumerate(sorted(few_real.iterdir())[:3]):
        (mixed / ("a" if i else "b") / p.name).symlink_to(p)
    assert class_layout(mixed) == ("a", "b")
    (mixed / "top.png").symlink_to(sorted(few_real.iterdir())[5])
    assert class_layout(mixed) == ()  # images beside the subfolders: one tree, not classes
    many = tmp_path / "patients"
    for i in range(MAX_CLASSES + 1):
        (many / f"p{i:02d}").mkdir(parents=True)
        (many / f"p{i:02d}" / "x.png").symlink_to(sorted(few_real.iterdir())[0])
    assert class_layout(many) == ()  # 17 subfolders: patients or dates, not classes
    assert list(labels_of(["NORMAL/a.png", "PNEUMONIA/b.png"], ("NORMAL", "PNEUMONIA"))) == [0, 1]
    with pytest.raises(ValueError):
        labels_of(["OTHER/a.png"], ("NORMAL", "PNEUMONIA"))


def test_every_batch_holds_each_class_alike():
    from cxr_training.pipeline import balanced_indices

    labels = tf.constant(np.r_[np.zeros(30), np.ones(12), np.full(9, 2)].astype(np.int32))
    for step in range(20):
        idx = balanced_indices(3, step, labels, 3, 12).numpy()
        got = labels.numpy()[idx]
        assert len(set(idx)) == 12 and list(got) == [0, 1, 2] * 4  # distinct, the classes in turn
    a, b = balanced_indices(3, 5, labels, 3, 12).numpy(), balanced_indices(3, 5, labels, 3, 12).numpy()
    assert (a == b).all() and not (a == balanced_indices(3, 6, labels, 3, 12).numpy()).all()


def test_a_labelled_run_trains_scores_each_class_and_resumes(labelled, tmp_path):
    from cxr_training.models import load_generator
    from cxr_training.train import train

    data, held = labelled
    cfg = preset("smoke").replace(epochs=2)
    run = train(cfg, data, out_root=tmp_path / "runs", heldout_dir=held, log=lambda m: None, stop_at=3)
    record = json.loads((run / "config.json").read_text())
    assert record["config"]["classes"] == ["NORMAL", "PNEUMONIA"] and record["classes"] == {"NORMAL": 8, "PNEUMONIA": 8}
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    for c in ("NORMAL", "PNEUMONIA"):
        assert np.isfinite(rows[0][f"q_kid@{c}"]) and np.isfinite(rows[0][f"q_kid_se@{c}"])
    train(resume_dir=run, log=lambda m: None)  # resumed: classes and labels from the run's own files
    g = load_generator(run / "generator.keras")
    assert g.input_shape == (None, 16 + 2)  # the latent, then the one-hot class
    assert len([json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]) == 2


def test_labelled_runs_refuse_what_cannot_work(labelled, tmp_path, few_heldout):
    from cxr_training.train import train

    data, held = labelled
    with pytest.raises(TrainingError, match="same class subfolders"):
        train(preset("smoke"), data, out_root=tmp_path / "r", heldout_dir=few_heldout, log=lambda m: None)
    with pytest.raises(TrainingError, match="multiple of the 2 classes"):
        train(preset("smoke").replace(batch_size=3), data, out_root=tmp_path / "r", log=lambda m: None)


def test_dry_run_refuses_a_labelled_config_in_the_words_of_a_run(labelled, tmp_path):
    """cxr-train --dry-run and a run tell the config the data's classes and check it in one
    place (data.with_data_classes): the same one line, exit 2."""
    from click.testing import CliRunner

    from cxr_training.cli import main
    from cxr_training.train import prepare_run

    data, _ = labelled
    with pytest.raises(TrainingError) as e:
        prepare_run(preset("smoke").replace(batch_size=3), data, out_root=tmp_path / "r", log=lambda m: None)
    r = CliRunner().invoke(main, ["--preset", "smoke", "--batch-size", "3", "--data", str(data), "--dry-run"])
    assert r.exit_code == 2 and r.output.strip().splitlines() == [f"error: {e.value}"]
    assert "holds the classes NORMAL, PNEUMONIA" in str(e.value) and not (tmp_path / "r").exists()


def test_labels_off_trains_one_set_as_before(labelled, tmp_path):
    from cxr_training.train import train

    data, _ = labelled
    run = train(preset("smoke"), data, out_root=tmp_path / "runs", log=lambda m: None, labels="off")
    record = json.loads((run / "config.json").read_text())
    assert record["config"]["classes"] == [] and "classes" not in record and record["data"]["count"] == 16


def test_the_projection_discriminator_reads_the_class_at_the_logit():
    from cxr_training.models import build_discriminator, logit_model

    cfg = preset("smoke").replace(classes=("A", "B"), d_condition="projection")
    d = build_discriminator(cfg)
    names = {layer.name for layer in d.layers}
    assert {"d_class_embed", "d_projection", "d_main", "d_out"} <= names
    rng = np.random.default_rng(0)
    image = rng.uniform(-1, 1, (2, 32, 32, 1)).astype(np.float32)
    d.get_layer("d_class_embed").kernel.assign(rng.normal(0, 1, d.get_layer("d_class_embed").kernel.shape))
    logits = logit_model(d)
    a = logits(np.concatenate([image, np.broadcast_to(np.array([1, 0], np.float32), (2, 32, 32, 2))], 3)).numpy()
    b = logits(np.concatenate([image, np.broadcast_to(np.array([0, 1], np.float32), (2, 32, 32, 2))], 3)).numpy()
    assert np.abs(a - b).max() > 1e-3  # the class changes the logit
    # the convolutions see the image alone: their first kernel has one input channel
    assert d.get_layer("d_conv1").kernel.shape[2] == 1
    assert build_discriminator(cfg.replace(d_condition="channels")).get_layer("d_conv1").kernel.shape[2] == 3


def test_a_labelled_run_trains_with_class_channels_in_d(labelled, tmp_path):
    """The other conditioning (the default is projection, which the other labelled tests train)."""
    from cxr_training.train import train

    data, _ = labelled
    run = train(preset("smoke").replace(d_condition="channels"), data, out_root=tmp_path / "runs",
                log=lambda m: None)
    assert (run / "generator.keras").is_file()
