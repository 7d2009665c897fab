"""A labelled generator end to end: exported with the class as an input beside z (parity and int8
gates on every class), sampled by class through the API and `cxr-runtime sample --class/--classes`,
refused clearly where a class is missing or not the model's."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from cxr_training.config import preset
from cxr_training.tfenv import import_tf

tf, keras = import_tf()


@pytest.fixture(scope="module")
def labelled_run(kermany, tmp_path_factory):
    from cxr_training.train import train

    tmp = tmp_path_factory.mktemp("labelled")
    for c in ("NORMAL", "PNEUMONIA"):
        (tmp / "data" / c).mkdir(parents=True)
        for p in sorted((kermany / "train" / c).iterdir())[:8]:
            (tmp / "data" / c / p.name).symlink_to(p)
    # with an EMA, so that the run also keeps G's raw weights (generator-raw.keras)
    cfg = dataclasses.replace(preset("smoke"), ema_halflife=4.0)
    run = train(cfg, tmp / "data", out_root=tmp / "runs", log=lambda m: None)
    return run, tmp / "data", tmp


@pytest.fixture(scope="module")
def exported(labelled_run):
    from cxr_export.cli import main

    run, data, tmp = labelled_run
    out = tmp / "labelled.onnx"
    r = CliRunner().invoke(main, [str(run), "--out", str(out), "--quantize", "int8", "--data", str(data)],
                           catch_exceptions=False)
    assert r.exit_code == 0, r.output
    return out


def test_the_model_takes_the_class_beside_z(exported, labelled_run):
    from cxr_runtime import Generator
    from cxr_training.models import load_generator

    run, _, _ = labelled_run
    model = onnx.load(exported)
    assert [i.name for i in model.graph.input][:2] == ["z", "label"]
    metadata = {p.key: p.value for p in model.metadata_props}
    assert json.loads(metadata["classes"]) == ["NORMAL", "PNEUMONIA"] and metadata["latent_dim"] == "16"
    assert metadata["weights"] == "ema"
    gen = Generator(exported, device="cpu")
    assert gen.classes == ("NORMAL", "PNEUMONIA") and gen.latent_dim == 16
    keras_g = load_generator(run / "generator.keras")
    z = np.random.default_rng(0).standard_normal((6, 16)).astype(np.float32)
    for k in (0, 1):
        joined = np.concatenate([z, np.eye(2, dtype=np.float32)[np.full(6, k)]], axis=1)
        want = keras_g(joined, training=False).numpy()[..., 0]
        np.testing.assert_allclose(gen.generate(z, np.full(6, k)), want, atol=1e-4)
    a, b = gen.sample(4, seed=3, label="NORMAL"), gen.sample(4, seed=3, label="PNEUMONIA")
    assert not np.array_equal(a, b)  # the class changes the image
    np.testing.assert_array_equal(gen.sample(4, seed=3, label=0, batch_size=3), a)  # name or index, any batch
    int8 = Generator(exported.with_suffix(".int8.onnx"), device="cpu")
    assert int8.classes == gen.classes and int8.sample(2, label="PNEUMONIA").shape == (2, 32, 32)


def test_the_raw_weights_export_as_the_same_labelled_model(labelled_run, tmp_path):
    """generator-raw.keras has no provenance file of its own: its export takes the run's (the
    classes among it) and says the weights are raw; without that it would be a one-class model."""
    from cxr_export.cli import main
    from cxr_runtime import Generator

    run, _, _ = labelled_run
    assert (run / "generator-raw.keras").is_file()
    out = tmp_path / "raw.onnx"
    r = CliRunner().invoke(main, [str(run / "generator-raw.keras"), "--out", str(out)], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    metadata = {p.key: p.value for p in onnx.load(out).metadata_props}
    assert metadata["weights"] == "raw" and json.loads(metadata["classes"]) == ["NORMAL", "PNEUMONIA"]
    assert metadata["run_id"] == run.name and metadata["latent_dim"] == "16"
    assert Generator(out, device="cpu").sample(2, label="PNEUMONIA").shape == (2, 32, 32)


def test_a_class_is_required_and_must_be_the_models(exported, tmp_path):
    from cxr_runtime import Generator
    from cxr_runtime.errors import LabelError
    from tests.runtime.onnx_models import tiny_generator

    gen = Generator(exported, device="cpu")
    with pytest.raises(LabelError, match="labelled model"):
        gen.sample(2)
    with pytest.raises(LabelError, match="no class 'COVID'"):
        gen.sample(2, label="COVID")
    with pytest.raises(LabelError, match="neither a name nor an index"):
        gen.sample(2, label=5)
    plain = Generator(tiny_generator(tmp_path / "g.onnx", size=16), device="cpu")
    with pytest.raises(LabelError, match="not a labelled model"):
        plain.sample(2, label="NORMAL")


def test_cli_samples_each_class_into_its_folder(exported, tmp_path):
    from cxr_runtime.cli import main

    out = tmp_path / "s"
    r = CliRunner().invoke(main, ["sample", "--model", str(exported), "--out", str(out), "--classes",
                                  "NORMAL=5,PNEUMONIA=3", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    for name, count in (("NORMAL", 5), ("PNEUMONIA", 3)):
        manifest = json.loads((out / name / "manifest.json").read_text())
        assert manifest["class"] == name and manifest["count"] == count
        assert len(list((out / name).glob("sample-*.png"))) == count
    r = CliRunner().invoke(main, ["sample", "--model", str(exported), "--out", str(tmp_path / "t"), "--n", "2"])
    assert r.exit_code == 2 and "choose --class NAME or --classes NORMAL=2,PNEUMONIA=2" in r.output
    r = CliRunner().invoke(main, ["sample", "--model", str(exported), "--out", str(tmp_path / "t"), "--class", "X"])
    assert r.exit_code == 2 and "no class 'X'" in r.output and not (tmp_path / "t").exists()
    r = CliRunner().invoke(main, ["sample", "--model", str(exported), "--out", str(tmp_path / "t"), "--classes",
                                  "NORMAL=two"])
    assert r.exit_code == 2 and "expected NAME=N" in r.output


def test_a_dicom_set_of_a_class_says_its_class_beside_the_synthetic_marking(exported, tmp_path):
    pydicom = pytest.importorskip("pydicom")
    from cxr_runtime import Generator
    from cxr_runtime.sampling import sample_to_folder

    gen = Generator(exported, device="cpu")
    sets = {}
    for name in ("NORMAL", "PNEUMONIA"):
        sample_to_folder(gen, tmp_path / name, 2, seed=0, fmt="dicom", label=name)
        sets[name] = pydicom.dcmread(next((tmp_path / name).glob("sample-*.dcm")))
    p = sets["PNEUMONIA"]
    assert "requested class PNEUMONIA" in p.ImageComments and "SYNTHETIC IMAGE" in p.ImageComments
    assert p.SeriesDescription.endswith(", class PNEUMONIA") and p.ConversionType == "SYN"
    assert p.PatientID != sets["NORMAL"].PatientID and p.StudyInstanceUID != sets["NORMAL"].StudyInstanceUID


def test_evaluate_audit_and_report_take_class_folders(exported, labelled_run, kermany, tmp_path):
    """A `sample --classes` output scored against labelled real folders: each class against its
    own real images (evaluate), its own training images (audit, OUT/CLASS/), one report per class."""
    from cxr_runtime.cli import main

    _, data, _ = labelled_run
    samples = tmp_path / "s"
    assert CliRunner().invoke(main, ["sample", "--model", str(exported), "--out", str(samples), "--classes",
                                     "NORMAL=12,PNEUMONIA=12", "--device", "cpu"]).exit_code == 0
    r = CliRunner().invoke(main, ["evaluate", "--fake", str(samples), "--real", str(data), "--quality", "--json",
                                  "--device", "cpu", "--size", "32"])
    assert r.exit_code == 0, r.output
    res = json.loads(r.output)["classes"]
    assert set(res) == {"NORMAL", "PNEUMONIA"}
    for c in res:
        assert res[c]["fake"]["images"] == 12 and res[c]["real"]["images"] == 8
        assert res[c]["real"]["folder"].endswith(c) and np.isfinite(res[c]["quality"]["kid"])
    r = CliRunner().invoke(main, ["evaluate", "--fake", str(samples), "--real", str(kermany / "train" / "NORMAL"),
                                  "--device", "cpu"])
    assert r.exit_code == 0 and "== class" not in r.output  # a plain real folder: one set, as before
    r = CliRunner().invoke(main, ["audit", "--fake", str(samples), "--train", str(data), "--out", str(tmp_path / "a"),
                                  "--size", "64"])
    assert r.exit_code == 0, r.output
    assert r.output.count("== class") == 2
    for c in ("NORMAL", "PNEUMONIA"):
        summary = json.loads((tmp_path / "a" / c / "summary.json").read_text())
        assert summary["generated"] == 12 and summary["training"] == 8 and summary["train"].endswith(c)
    r = CliRunner().invoke(main, ["report", "--fake", str(samples), "--real", str(data), "--train", str(data),
                                  "--out", str(tmp_path / "r.html")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "r-NORMAL.html").is_file() and (tmp_path / "r-PNEUMONIA.html").is_file()
