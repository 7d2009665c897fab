"""--precision: the choice of auto, the float32 output layers, loss scaling, a float32 export."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cxr_training import pipeline, precision
from cxr_training.config import preset
from cxr_training.gan import GAN, make_optimizers
from cxr_training.models import build_discriminator, build_generator
from cxr_training.tfenv import import_tf
from cxr_training.train import train

tf, keras = import_tf()


def test_auto_choice():
    assert precision.resolve("auto", 0, {"avx512f", "avx512_bf16"})[0] == "bfloat16"
    assert precision.resolve("auto", 0, {"amx_bf16"})[0] == "bfloat16"
    assert precision.resolve("auto", 0, {"avx2", "avx512f"})[0] == "float32"
    assert precision.resolve("auto", 1, {"avx512_bf16"})[0] == "float32"  # float16 on GPUs is opt-in
    assert precision.resolve("float16", 0, set()) == ("float16", "requested")
    with pytest.raises(ValueError):
        precision.resolve("int8", 0, set())


def test_cpu_flags(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu avx512f avx512_bf16\n\nprocessor\t: 1\nflags\t\t: fpu\n")
    assert precision.cpu_flags(info) == {"fpu", "avx512f", "avx512_bf16"}
    assert precision.cpu_flags(tmp_path / "missing") == set()


@pytest.mark.parametrize("prec", ["bfloat16", "float16"])
def test_mixed_models_keep_float32_outputs(prec):
    """Hidden layers and G's output convolution compute in the mixed dtype; G's tanh and
    D's sigmoid layer in float32; variables float32; the same weights as the float32 nets."""
    cfg = preset("smoke").replace(precision=prec)
    g, d = build_generator(cfg), build_discriminator(cfg)
    hidden = {"bfloat16": "bfloat16", "float16": "float16"}[prec]
    assert g.get_layer("g_up1").compute_dtype == hidden and g.get_layer("g_up1").variable_dtype == "float32"
    assert g.get_layer("g_out").compute_dtype == hidden and g.get_layer("g_out_tanh").compute_dtype == "float32"
    assert d.get_layer("d_out").compute_dtype == "float32"
    plain = build_generator(cfg, precision="float32")
    assert [w.shape for w in plain.get_weights()] == [w.shape for w in g.get_weights()]
    z = np.random.default_rng(0).standard_normal((2, cfg.latent_dim)).astype(np.float32)
    img = g(z)
    assert img.dtype == "float32" and d(img).dtype == "float32"


def _one_step(gan, cfg, step=0):
    reals = np.random.default_rng(0).uniform(-1, 1, (8, cfg.image_size, cfg.image_size)).astype(np.float32)
    s, real = next(iter(pipeline.dataset(pipeline.MemorySource(reals, cfg), cfg, step, step + 1)))
    return gan.train_step((s, real))


def test_float16_loss_scaling_skips_an_overflowing_step():
    """With an absurd loss scale the float16 gradients overflow: the update is skipped, the
    scale halves, and the global step still advances (batches stay keyed by step)."""
    cfg = preset("smoke").replace(precision="float16")
    keras.utils.set_random_seed(0)
    gan = GAN(build_generator(cfg), build_discriminator(cfg), cfg)
    d_opt, g_opt = make_optimizers(cfg)
    assert isinstance(d_opt, keras.optimizers.LossScaleOptimizer)
    gan.compile(d_opt, g_opt)
    gan.build_optimizers()
    d_opt.dynamic_scale.assign(2.0**100)  # float16 tops out at 65504
    before = [v.numpy().copy() for v in gan.discriminator.trainable_variables]
    _one_step(gan, cfg)
    after = [v.numpy() for v in gan.discriminator.trainable_variables]
    assert all(np.array_equal(a, b) for a, b in zip(before, after))
    assert float(d_opt.dynamic_scale.numpy()) == 2.0**99
    assert int(d_opt.iterations.numpy()) == 0 and gan.step == 1
    # a sane scale trains
    d_opt.dynamic_scale.assign(2.0**10)
    _one_step(gan, cfg, step=1)
    assert int(d_opt.iterations.numpy()) == 1


def test_bfloat16_run_resumes_and_exports_float32(few_real, tmp_path):
    cfg = preset("smoke").replace(precision="bfloat16", epochs=2, steps_per_epoch=2, keep_checkpoints=2)
    run = train(cfg, few_real, out_root=tmp_path, log=lambda m: None)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all(np.isfinite(r["g_loss"]) and np.isfinite(r["ssim"]) for r in rows)
    info = json.loads((run / "generator.json").read_text())
    assert info["training_precision"] == "bfloat16" and info["config"]["precision"] == "bfloat16"
    g = keras.saving.load_model(run / "generator.keras")
    assert {layer.dtype_policy.name for layer in g.layers} == {"float32"}
    # the run's config holds the resolved precision, so a resume rebuilds the same networks
    assert json.loads((run / "config.json").read_text())["config"]["precision"] == "bfloat16"


def test_auto_is_resolved_before_the_run_is_written(few_real, tmp_path):
    logs = []
    run = train(preset("smoke").replace(precision="auto", epochs=1, steps_per_epoch=1), few_real,
                out_root=tmp_path, log=logs.append)
    stored = json.loads((run / "config.json").read_text())["config"]["precision"]
    assert stored in ("float32", "bfloat16") and stored == precision.resolve_here("auto")[0]
    assert any(m.startswith(f"precision {stored} (auto:") for m in logs)
