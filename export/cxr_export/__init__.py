"""cxr_export: the trained generator to ONNX, behind a numerical parity gate.

Imports cxr_training (to read runs) and cxr_runtime (file writing); adds tf2onnx and onnx.
"""
