"""The root of every error the project raises on purpose: `except cxr_runtime.CxrError`
catches them all, the runtime's (below), training's (cxr_training.errors) and export's
(cxr_export.errors). Each message is one line meant for the user of the calling tool, and each
class says the exit code its CLI ends with (`exit_code`: 2, a problem the user can fix,
unless the class says otherwise). `reported()` is the one place the CLIs turn them into that
line and that code; anything else still shows its traceback.

    CxrError
    |-- ModelError          the model file is missing, unreadable, not a cxr-export generator, or outputs NaN
    |-- DeviceError         the requested device cannot be used
    |-- ImageError          input images
    |   |-- ImageDecodeError    one file that is not a usable image (the message is the reason)
    |   `-- NoImagesError       a folder without a usable image
    |-- TooFewImagesError   a metric needs more images than the sets hold
    |-- SampleSetError      a sampling folder that holds another set, or cannot be written
    |-- LabelError          a class a model does not have, or none where a labelled model needs one
    |-- DicomError          DICOM input or output
    |   `-- DicomUnavailable    the `dicom` extra (pydicom) is not installed
    `-- DistributedError    a Ray job failed (a shard kept failing, the cluster cannot be reached)
        `-- RayUnavailable      the `ray` extra is not installed

The built-in base classes they also derive from (ValueError, RuntimeError) are kept for
callers written against earlier versions.
"""

from __future__ import annotations

import contextlib
import sys

EXIT_USER_ERROR = 2


class CxrError(Exception):
    """Base of every error the project raises on purpose."""

    exit_code: int = EXIT_USER_ERROR


@contextlib.contextmanager
def reported():
    """For a CLI's body: a CxrError becomes `error: <message>` on stderr (one line, no
    traceback) and the process exits with the error's `exit_code`."""
    try:
        yield
    except CxrError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        sys.exit(e.exit_code)


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


class LabelError(CxrError, ValueError):
    """A class a model does not have, a class for an unlabelled model, or none for a labelled one."""


class UtilityResultError(CxrError, ValueError):
    """A file given as a `cxr-utility protocols` result that is not one."""


class DistributedError(CxrError):
    """The Ray job failed (a shard kept failing, the cluster cannot be reached)."""


class RayUnavailable(DistributedError):
    """Ray is not installed."""
