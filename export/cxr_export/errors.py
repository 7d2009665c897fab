"""Export's errors, all under cxr_runtime.CxrError, each one line for the user of cxr-export.

    CxrError
    |-- ExportError         a problem with the input (a missing or unfinished run, bad options): exit 2
    |   `-- UnsupportedGenerator    a generator the optimised graph cannot be written for
    |-- ParityError         the ONNX model differs from Keras beyond the tolerance: exit 1
    |-- ConversionError     the converter itself failed: exit 1
    `-- Int8GateError       the int8 model's images are not faithful enough: exit 1
"""

from __future__ import annotations

from cxr_runtime.errors import CxrError

EXIT_GATE_FAILED = 1


class ExportError(CxrError):
    """A problem with the input (missing or unfinished run, bad options); exit code 2."""


class UnsupportedGenerator(ExportError, ValueError):
    """A generator whose layers the optimised graph does not cover."""


class ParityError(CxrError):
    """The converted model does not reproduce the Keras generator within tolerance."""

    exit_code = EXIT_GATE_FAILED


class ConversionError(CxrError):
    """The converter itself failed."""

    exit_code = EXIT_GATE_FAILED


class Int8GateError(CxrError):
    """The int8 model's images are not faithful enough to the fp32 model's."""

    exit_code = EXIT_GATE_FAILED
