"""Quality visible while training: epoch-end scores against a held-out folder, the third
plot, generator snapshots, and what export reads when the recipe keeps an EMA."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cxr_training import checkpoint, evaluate
from cxr_training.config import preset
from cxr_training.errors import TrainingError
from cxr_training.models import build_generator
from cxr_training.runs import D_HELDOUT_KEYS, QUALITY_KEYS
from cxr_training.tfenv import import_tf
from cxr_training.train import train

tf, keras = import_tf()


def _rows(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_epoch_rows_carry_the_held_out_scores(few_real, few_heldout, tmp_path):
    cfg = preset("smoke").replace(ema_halflife=2.0, snapshot_steps=(3,))
    run = train(cfg, few_real, out_root=tmp_path, log=lambda m: None, heldout_dir=few_heldout)
    rows = _rows(run)
    for row in rows:
        for key in ("q_recall", "q_coverage", "q_kid", "q_kid_se", "q_diversity", "q_diversity_real", "q_texture_auc",
                    "q_texture_auc_se", "q_hf_power_ratio", "q_detail_kurtosis", "q_detail_kurtosis_real"):
            assert np.isfinite(row[key]), key
        assert 0.0 <= row["q_recall"] <= 1.0 and 0.0 <= row["q_coverage"] <= 1.0
    # D's verdict on held-out real images beside its verdict on the training ones
    for row in rows:
        assert 0.0 <= row["heldout_acc"] <= 1.0
        assert all(abs(row[k]) <= 16.0 for k in D_HELDOUT_KEYS[1:])
    header = (run / "metrics.csv").read_text().splitlines()[0].split(",")
    assert set(QUALITY_KEYS) <= set(header) and set(D_HELDOUT_KEYS) <= set(header)
    assert (run / "plots" / "quality.png").stat().st_size > 1000
    record = json.loads((run / "config.json").read_text())
    assert record["heldout"]["count"] == 10
    ref = json.loads((run / "reference.json").read_text())["heldout"]
    assert ref["images"] == 10 and 0.0 <= ref["train_q_coverage"] <= 1.0

    # the snapshot at step 3 holds the sampling (EMA) generator and G's raw weights
    snap = run / "snapshots" / "step-000000003"
    info = json.loads((snap / "generator.json").read_text())
    assert (info["step"], info["epoch"], info["weights"]) == (3, 1, "ema")
    assert (snap / "generator.keras").is_file() and (snap / "generator-raw.keras").is_file()
    assert not (run / "snapshots" / "step-000000006").exists()


def test_monitor_scores_the_ema_generator(few_real, few_heldout, tmp_path, monkeypatch):
    """The epoch-end quality images come from the sampler (EMA weights), not from raw G."""
    from cxr_training import evaluate

    seen = []
    original = evaluate.QualityMonitor.score

    def spy(self, generate):
        seen.append(generate(self.z[:4]))
        return original(self, generate)

    monkeypatch.setattr(evaluate.QualityMonitor, "score", spy)
    cfg = preset("smoke").replace(epochs=1, ema_halflife=50.0, ema_rampup=0.0)
    run = train(cfg, few_real, out_root=tmp_path, log=lambda m: None, heldout_dir=few_heldout)
    ckpt, meta = checkpoint.latest_valid(run)
    with np.load(ckpt / "state.npz") as data:
        ema = [data[v["key"]] for v in meta["variables"] if v["key"].startswith("ema/")]
        raw = [data[v["key"]] for v in meta["variables"] if v["key"].startswith("generator/")]
    z = np.random.default_rng([cfg.seed, evaluate.PURPOSE_QUALITY]).standard_normal((4, cfg.latent_dim))
    g = build_generator(cfg)
    g.set_weights(ema)
    np.testing.assert_allclose(seen[0], g(z.astype(np.float32)).numpy()[..., 0], atol=1e-6)
    g.set_weights(raw)
    assert np.abs(seen[0] - g(z.astype(np.float32)).numpy()[..., 0]).max() > 1e-4


def test_fixed_latents_never_overlap_across_seeds_and_purposes():
    """Keyed by (seed, purpose): no seed's evaluation latents are another seed's monitor latents
    (with seed + offset they were: seed s+1's evaluation = seed s's monitor)."""
    seen = {}
    for seed in range(20):
        for purpose in (evaluate.PURPOSE_EVAL, evaluate.PURPOSE_QUALITY):
            first = evaluate.fixed_latents(2, 8, seed, purpose)[0].tobytes()
            assert first not in seen, (seed, purpose, seen.get(first))
            seen[first] = (seed, purpose)
    legacy = [evaluate.fixed_latents(2, 8, s, p, evaluate.LATENTS_LEGACY)[0].tobytes()
              for s, p in ((1, evaluate.PURPOSE_EVAL), (0, evaluate.PURPOSE_QUALITY))]
    assert legacy[0] == legacy[1]  # the old rule's overlap, kept only for runs created under it


def test_heldout_sharing_training_images_is_refused(few_real, tmp_path):
    with pytest.raises(TrainingError, match="shares 8 image"):
        train(preset("smoke"), few_real, out_root=tmp_path, log=lambda m: None, heldout_dir=few_real)


def test_resume_refuses_other_heldout_images(few_real, few_heldout, tmp_path):
    run = train(preset("smoke").replace(epochs=1), few_real, out_root=tmp_path, log=lambda m: None,
                heldout_dir=few_heldout)
    sorted(few_heldout.iterdir())[0].unlink()
    with pytest.raises(TrainingError, match="not those run"):
        train(None, None, resume_dir=run, log=lambda m: None)


def test_heldout_with_too_few_images_is_refused(few_real, few_heldout, tmp_path):
    for p in sorted(few_heldout.iterdir())[5:]:
        p.unlink()
    with pytest.raises(TrainingError, match="5 usable images"):
        train(preset("smoke"), few_real, out_root=tmp_path, log=lambda m: None, heldout_dir=few_heldout)


def test_resume_refuses_a_heldout_folder_the_run_never_recorded(few_real, few_heldout, tmp_path):
    """A run started without --heldout has unscored epochs: a resume may not start scoring, or
    metrics.jsonl would mix rows with and without the monitor."""
    cfg = preset("smoke").replace(epochs=1)
    run = train(cfg, few_real, out_root=tmp_path, log=lambda m: None)
    rows_before = (run / "metrics.jsonl").read_text()
    with pytest.raises(TrainingError, match="started without --heldout"):
        train(None, None, resume_dir=run, heldout_dir=few_heldout, log=lambda m: None)
    assert (run / "metrics.jsonl").read_text() == rows_before


def test_heldout_scores_tell_memorising_from_learning():
    """Logits from probabilities, clipped at |16|; a D that calls its training images real and
    other patients' fake reads heldout_acc 0 with d_logit_real far above d_logit_heldout."""
    p = 1.0 / (1.0 + np.exp(-np.array([2.0, -1.0])))
    out = evaluate.heldout_scores(p, p, p)
    assert out["heldout_acc"] == 0.5 and out["d_logit_real"] == pytest.approx(0.5, abs=1e-9)
    memorised = evaluate.heldout_scores(np.ones(8), np.full(8, 0.2), np.zeros(8))
    assert memorised["heldout_acc"] == 0.0
    assert memorised["d_logit_real"] == pytest.approx(16.0) and memorised["d_logit_fake"] == pytest.approx(-16.0)
    assert memorised["d_logit_heldout"] == pytest.approx(np.log(0.25))


def test_evaluator_judges_the_heldout_images_themselves():
    """The held-out verdict comes from D on the held-out images: a D that calls bright images
    real sees bright training images and dark held-out ones; without held-out images no such
    keys are written."""
    cfg = preset("smoke")
    inp = keras.Input((cfg.image_size, cfg.image_size, 1))
    d = keras.Model(inp, keras.layers.Lambda(lambda x: tf.sigmoid(50.0 * tf.reduce_mean(x, axis=(1, 2, 3))))(inp))
    size = cfg.image_size
    ev = evaluate.Evaluator(build_generator(cfg), d, np.full((6, size, size), 0.5, np.float32), cfg.latent_dim, 0, 6, 4)
    assert "heldout_acc" not in ev.score()[0]
    ev.set_heldout(np.full((9, size, size), -0.5, np.float32))
    scores = ev.score()[0]
    assert scores["real_acc"] == 1.0 and scores["heldout_acc"] == 0.0
    assert scores["d_logit_real"] > 10 and scores["d_logit_heldout"] < -10
    assert len(ev.heldout) == 6  # at most as many as the training images scored
