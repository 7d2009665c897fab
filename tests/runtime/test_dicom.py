"""DICOM out (a set a PACS files as one patient, study and series; valid for dciodvfy) and
DICOM in (what a viewer shows: rescale, window or VOI LUT, MONOCHROME1 inverted)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from cxr_runtime import errors
from cxr_runtime.cli import main
from cxr_runtime.images import decode_image, load_folder

from .onnx_models import tiny_generator

if os.environ.get("CI") != "true":
    pytest.importorskip("pydicom")
import pydicom  # noqa: E402
from pydicom.dataset import FileMetaDataset  # noqa: E402
from pydicom.uid import ExplicitVRLittleEndian, generate_uid  # noqa: E402


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def dicom_set(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dcm")
    model = tiny_generator(tmp / "g.onnx", size=32, metadata={"exported": "2026-11-26T21:04:55+0000"})
    assert run("sample", "--n", 6, "--model", model, "--out", tmp / "d", "--format", "dicom").exit_code == 0
    assert run("sample", "--n", 6, "--model", model, "--out", tmp / "again", "--format", "dicom").exit_code == 0
    assert run("sample", "--n", 6, "--model", model, "--out", tmp / "p").exit_code == 0
    assert run("sample", "--n", 3, "--model", model, "--out", tmp / "other", "--format", "dicom",
               "--seed", 1).exit_code == 0
    return tmp


def test_one_patient_study_and_series_per_set(dicom_set):
    ds = [pydicom.dcmread(dicom_set / "d" / f"sample-{i:06d}.dcm") for i in range(6)]
    for key in ("PatientID", "PatientName", "StudyInstanceUID", "SeriesInstanceUID", "SeriesNumber", "StudyID"):
        assert len({str(d.get(key)) for d in ds}) == 1, key
    assert [int(d.InstanceNumber) for d in ds] == [1, 2, 3, 4, 5, 6]
    assert len({d.SOPInstanceUID for d in ds}) == 6
    d = ds[0]
    assert d.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7" and d.ConversionType == "SYN"
    assert d.BodyPartExamined == "CHEST" and d.Modality == "OT" and "PatientOrientation" in d
    assert str(d.PatientName) == "SYNTHETIC^CXR-GAN" and d.PatientID.startswith("SYNTHETIC-")
    assert "SYNTHETIC IMAGE" in d.ImageComments and "SYNTHETIC IMAGE" in d.DerivationDescription
    manifest = json.loads((dicom_set / "d" / "manifest.json").read_text())
    assert manifest["dicom"]["study_uid"] == d.StudyInstanceUID and manifest["dicom"]["patient_id"] == d.PatientID
    other = pydicom.dcmread(dicom_set / "other" / "sample-000000.dcm")  # another set: another patient and study
    assert other.PatientID != d.PatientID and other.StudyInstanceUID != d.StudyInstanceUID
    assert other.SeriesInstanceUID != d.SeriesInstanceUID
    png = cv2.imread(str(dicom_set / "p" / "sample-000000.png"), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(d.pixel_array, png)
    assert (d.StudyDate, d.StudyTime) == ("20261126", "210455")  # the model's export time


def test_dicom_objects_are_reproducible(dicom_set):
    """Every identifier derives from (model, seed, count, index): the same command writes the
    same bytes, as for PNG (so a resumed or distributed set equals one written in one go)."""
    for i in range(6):
        name = f"sample-{i:06d}.dcm"
        assert (dicom_set / "d" / name).read_bytes() == (dicom_set / "again" / name).read_bytes()


def test_every_object_passes_dciodvfy(dicom_set):
    tool = shutil.which("dciodvfy")
    if tool is None:
        pytest.skip("dciodvfy is not installed here (Debian package dicom3tools; .ci/run installs it where it can)")
    for path in sorted((dicom_set / "d").glob("*.dcm")):
        r = subprocess.run([tool, str(path)], capture_output=True, text=True)
        report = r.stdout + r.stderr
        assert "Error" not in report and "Warning" not in report, f"{path.name}:\n{report}"


def test_sampled_dicom_scores_as_the_png_set(dicom_set, kermany):
    """Round trip: evaluate on the DICOM set gives the PNG set's numbers."""
    def scores(folder):
        r = run("evaluate", "--fake", folder, "--real", kermany / "heldout" / "NORMAL", "--json", "--engine", "numpy")
        assert r.exit_code == 0, r.output
        return json.loads(r.stdout)

    a, b = scores(dicom_set / "d"), scores(dicom_set / "p")
    assert a["fake"]["images"] == b["fake"]["images"] == 6
    assert a["ssim"] == b["ssim"] and a["mse"] == b["mse"]
    np.testing.assert_array_equal(load_folder(dicom_set / "d", size=32).images,
                                  load_folder(dicom_set / "p", size=32).images)


def _dicom(path, pixels: np.ndarray, **attrs) -> bytes:
    file_meta = FileMetaDataset()
    file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1"
    file_meta.MediaStorageSOPInstanceUID = generate_uid()
    file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = file_meta
    ds.SOPClassUID, ds.SOPInstanceUID = file_meta.MediaStorageSOPClassUID, file_meta.MediaStorageSOPInstanceUID
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = attrs.pop("PhotometricInterpretation", "MONOCHROME2")
    ds.BitsAllocated = 16
    ds.BitsStored = attrs.pop("BitsStored", 12)
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 1 if pixels.dtype == np.int16 else 0
    for k, v in attrs.items():
        setattr(ds, k, v)
    ds.PixelData = pixels.tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path.read_bytes()


def test_dicom_in_applies_rescale_window_and_monochrome1(tmp_path):
    ramp = np.tile(np.arange(0, 4096, 64, dtype=np.uint16), (32, 1))  # 32 x 64, 12-bit values
    plain = decode_image(_dicom(tmp_path / "a.dcm", ramp))
    np.testing.assert_allclose(plain, ramp / 4095.0, atol=1e-6)  # full stored range -> [0, 1]
    inverted = decode_image(_dicom(tmp_path / "b.dcm", ramp, PhotometricInterpretation="MONOCHROME1"))
    np.testing.assert_allclose(inverted, 1.0 - ramp / 4095.0, atol=1e-6)
    # a window of 1000..2000 (centre 1500, width 1000): below is black, above white, linear between
    windowed = decode_image(_dicom(tmp_path / "c.dcm", ramp, WindowCenter=1500, WindowWidth=1000))
    assert windowed[0, ramp[0] < 1000].max() == 0.0 and windowed[0, ramp[0] > 2000].min() == 1.0
    inside = (ramp[0] > 1100) & (ramp[0] < 1900)
    np.testing.assert_allclose(windowed[0, inside], (ramp[0, inside] - 1000) / 1000, atol=2e-3)
    # rescale slope/intercept (e.g. to Hounsfield-like units) with a window in those units
    rescaled = decode_image(_dicom(tmp_path / "d.dcm", ramp, RescaleSlope=2, RescaleIntercept=-1000,
                                   WindowCenter=2000, WindowWidth=2000))  # stored 1000..2000 -> 0..1
    assert rescaled[0, ramp[0] < 1000].max() == 0.0 and rescaled[0, ramp[0] > 2000].min() == 1.0
    mid = (ramp[0] > 1100) & (ramp[0] < 1900)
    np.testing.assert_allclose(rescaled[0, mid], (ramp[0, mid] - 1000) / 1000, atol=2e-3)


def test_unusable_dicom_files_are_skipped_with_a_reason(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    ok = np.tile(np.arange(0, 4096, 64, dtype=np.uint16), (32, 1))
    _dicom(folder / "good.dcm", ok)
    data = (folder / "good.dcm").read_bytes()
    (folder / "cut.dcm").write_bytes(data[: len(data) - 500])
    multi = folder / "multi.dcm"
    _dicom(multi, np.concatenate([ok, ok]), NumberOfFrames=2, Rows=32)
    s = load_folder(folder, size=16)
    assert s.files == ["good.dcm"]
    reasons = dict(s.skipped)
    assert "could not be decoded" in reasons["cut.dcm"] or "unreadable" in reasons["cut.dcm"]
    assert "multi-frame" in reasons["multi.dcm"]


def test_dicom_without_pydicom_says_which_extra(tmp_path, monkeypatch):
    import sys

    ok = np.tile(np.arange(0, 4096, 64, dtype=np.uint16), (32, 1))
    data = _dicom(tmp_path / "a.dcm", ok)
    monkeypatch.setitem(sys.modules, "pydicom", None)
    with pytest.raises(errors.ImageDecodeError, match=r"pip install 'cxr-gan\[dicom\]'"):
        decode_image(data)
    with pytest.raises(errors.DicomUnavailable, match=r"cxr-gan\[dicom\]"):
        from cxr_runtime import dicom

        dicom.check_available()
