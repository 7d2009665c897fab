"""cxr_runtime: the light ground floor of cxr-gan.

Image decoding and preprocessing, the metrics (SSIM, MSE, discriminator scores) and
atomic file writing live here, once; training imports them from this package so that
the numbers a user computes on the hospital side are the numbers training logged.

This package must never import tensorflow, keras, tf2onnx, cxr_training or cxr_export.
"""

__version__ = "0.1.0"
