"""cxr_export: generator to ONNX with a numerical parity gate (not yet implemented).

This package is reserved for the export step; it has no functionality yet.
"""
