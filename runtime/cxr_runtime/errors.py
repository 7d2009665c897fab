"""Every error the runtime raises on purpose, under one base: `except cxr_runtime.CxrError`
catches them all. Each message is one line meant for the user of the calling tool.

    CxrError
    |-- ModelError          the model file is missing, unreadable, not a cxr-export generator, or outputs NaN
    |-- DeviceError         the requested device cannot be used
    |-- ImageError          input images
    |   |-- ImageDecodeError    one file that is not a usable image (the message is the reason)
    |   `-- NoImagesError       a folder without a usable image
    |-- TooFewImagesError   a metric needs more images than the sets hold
    |-- SampleSetError      a sampling folder that holds another set, or cannot be written
    `-- DicomError          DICOM input or output
        `-- DicomUnavailable    the `dicom` extra (pydicom) is not installed

The built-in base classes they also derive from (ValueError, RuntimeError) are kept for
callers written against earlier versions.
"""

from __future__ import annotations


class CxrError(Exception):
    """Base of every error cxr_runtime raises on purpose."""


class ModelError(CxrError, ValueError):
    """The model file is missing, unreadable or not a usable ONNX generator."""


class DeviceError(CxrError, RuntimeError):
    """The requested device cannot be used."""


class ImageError(CxrError, ValueError):
    """Input images that cannot be used."""


class ImageDecodeError(ImageError):
    """A file that is not a usable image; the message is the reason, for the user."""


class NoImagesError(ImageError):
    """A folder that holds no usable image."""


class TooFewImagesError(CxrError, ValueError):
    """A metric needs more images than the given sets hold."""


class SampleSetError(CxrError):
    """A sampling output folder that holds another set, or cannot be written."""


class DicomError(CxrError):
    """DICOM data that cannot be read or written."""


class DicomUnavailable(DicomError, RuntimeError):
    """DICOM input or output without pydicom installed."""
