"""Synthetic images as DICOM Secondary Capture objects (extra `dicom`: pydicom >= 3).

The information model, chosen so a PACS files a set the way it was made: **one synthetic
patient, one study and one series per sample set**, one instance per image.
- Patient: PatientName `SYNTHETIC^CXR-GAN`, PatientID `SYNTHETIC-<set id>`, empty birth
  date, sex O.
- Study: one StudyInstanceUID, StudyID `SYNTH`, StudyDescription saying it is synthetic.
- Series: one SeriesInstanceUID, SeriesNumber 1, Modality OT, BodyPartExamined CHEST.
- Instance: one SOPInstanceUID per image, InstanceNumber = index + 1.
Like the pixels, every identifier is a function of the set (model sha256, seed, count) and
the image index: UIDs are derived from them (pydicom's generate_uid with those as entropy);
the study date and time are the model's export time (its `exported` metadata; empty, as type
2 allows, for a model without it). So an object's bytes are reproducible: a resumed
set, or one written by several Ray workers, is byte-identical to a set written in one go,
and different sets (another model, seed or count) never share a patient, study or instance.
Every object says it is synthetic in several places a reader will look: ConversionType
SYN (synthetic image), ImageComments and DerivationDescription (naming the model's sha256
prefix, the seed and the index), the patient's name and ID, and BurnedInAnnotation NO.
A labelled model's set carries its class beside that marking: "requested class NAME" in
ImageComments and DerivationDescription, ", class NAME" at the end of SeriesDescription (the
label is part of the set's identity: its UIDs and patient differ from another class's).
The attributes of the Secondary Capture IOD's mandatory modules are present (type 2 ones
empty where they have no value), so `dciodvfy` (dicom3tools) reports no error
(tests/runtime/test_dicom.py). The pixel data are the PNG output's bytes.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

import numpy as np

from cxr_runtime.errors import DicomUnavailable
from cxr_runtime.io import atomic_path

SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
SYNTHETIC_PATIENT = "SYNTHETIC^CXR-GAN"

__all__ = ["SECONDARY_CAPTURE", "SYNTHETIC_PATIENT", "DicomSet", "DicomUnavailable", "check_available", "write_dicom"]


def _pydicom():
    try:
        import pydicom
        from pydicom.dataset import FileMetaDataset
        from pydicom.uid import ExplicitVRLittleEndian, generate_uid
    except ImportError:
        raise DicomUnavailable("DICOM needs pydicom: pip install 'cxr-gan[dicom]'") from None
    return pydicom, FileMetaDataset, ExplicitVRLittleEndian, generate_uid


def check_available() -> None:
    """Raise DicomUnavailable when pydicom is not installed."""
    _pydicom()


@dataclass(frozen=True)
class DicomSet:
    """The identity of one sample set, from which every identifier of its objects derives."""

    model_sha256: str
    seed: int
    count: int
    exported: str = ""  # the model's export time (ISO 8601), the study's date and time
    label: str = ""  # the class of a labelled model's set ("" for an unlabelled model)

    def _uid(self, *what) -> str:
        _, _, _, generate_uid = _pydicom()
        label = [f"class={self.label}"] if self.label else []  # an unlabelled set's UIDs as before
        return generate_uid(entropy_srcs=["cxr-gan", self.model_sha256, str(self.seed), str(self.count), *label,
                                          *map(str, what)])

    @property
    def study_uid(self) -> str:
        return self._uid("study")

    @property
    def series_uid(self) -> str:
        return self._uid("series")

    def instance_uid(self, index: int) -> str:
        return self._uid("instance", index)

    @property
    def patient_id(self) -> str:
        key = f"{self.model_sha256}:{self.seed}:{self.count}{f':{self.label}' if self.label else ''}".encode()
        return "SYNTHETIC-" + hashlib.sha256(key).hexdigest()[:12].upper()

    def to_dict(self) -> dict:
        return {"study_uid": self.study_uid, "series_uid": self.series_uid, "patient_id": self.patient_id,
                **({"class": self.label} if self.label else {})}


def write_dicom(path: str | os.PathLike, image: np.ndarray, index: int, dset: DicomSet) -> None:
    """Write one uint8 (H, W) image, number `index` of the set `dset`, as a Secondary Capture
    object, atomically."""
    pydicom, FileMetaDataset, ExplicitVRLittleEndian, _ = _pydicom()
    image = np.ascontiguousarray(image, dtype=np.uint8)
    model_id, seed = dset.model_sha256[:16], dset.seed
    file_meta = FileMetaDataset()
    file_meta.MediaStorageSOPClassUID = SECONDARY_CAPTURE
    file_meta.MediaStorageSOPInstanceUID = dset.instance_uid(index)
    file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = file_meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = SECONDARY_CAPTURE
    ds.SOPInstanceUID = file_meta.MediaStorageSOPInstanceUID
    # patient
    ds.PatientName = SYNTHETIC_PATIENT
    ds.PatientID = dset.patient_id
    ds.PatientBirthDate = ""
    ds.PatientSex = "O"
    # study
    ds.StudyInstanceUID = dset.study_uid
    ds.StudyID = "SYNTH"
    ds.StudyDescription = "Synthetic chest X-rays (not a patient)"
    # the model's export time: fixed for the set, so the bytes do not depend on when they were written
    digits = "".join(c for c in dset.exported[:19] if c.isdigit())
    ds.StudyDate, ds.StudyTime = (digits[:8], digits[8:14]) if len(digits) >= 14 else ("", "")
    ds.AccessionNumber = ""
    ds.ReferringPhysicianName = ""
    # series
    ds.SeriesInstanceUID = dset.series_uid
    ds.SeriesNumber = 1
    ds.SeriesDescription = f"cxr-gan samples, model {model_id}, seed {seed}" + (
        f", class {dset.label}" if dset.label else "")
    ds.Modality = "OT"
    ds.BodyPartExamined = "CHEST"
    # equipment (SC Equipment module)
    ds.ConversionType = "SYN"
    ds.Manufacturer = "cxr-gan"
    # image
    ds.InstanceNumber = index + 1
    ds.PatientOrientation = ""  # type 2C: unknown for a synthetic image, so present and empty
    ds.BurnedInAnnotation = "NO"
    ds.ImageType = ["DERIVED", "SECONDARY"]
    comment = (f"SYNTHETIC IMAGE generated by the cxr-gan generator model {model_id}, seed {seed}, "
               f"index {index}" + (f", requested class {dset.label}" if dset.label else "")
               + ". It does not depict a real patient.")
    ds.ImageComments = comment
    ds.DerivationDescription = comment[:1024]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = image.shape
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PixelData = image.tobytes()
    with atomic_path(path, suffix=".dcm") as tmp:
        ds.save_as(tmp, enforce_file_format=True)
