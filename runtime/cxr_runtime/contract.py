"""The ONNX generator's interface, written once: what cxr-export writes and the runtime reads
(docs/export.md). The export package imports these; the runtime never imports the export.

    z [batch, latent_dim] float32  ->  image [batch, 1, size, size] float32 in [-1, 1] (NCHW)
    chunk [1] int64 (optional, the optimised graph only): images per pass of its convolution loop
"""

from __future__ import annotations

OPSET = 17
INPUT_NAME = "z"
OUTPUT_NAME = "image"
LAYOUT = "NCHW"
CHUNK_INPUT = "chunk"
REQUIRED_METADATA = ("latent_dim", "image_size", "synthetic")  # written by cxr-export
LATENT_SCALE_KEY = "latent_scale"  # metadata: the standard deviation latents are drawn at (default 1)
# A labelled generator (trained on one subfolder per class) has a second input, the class of
# each image, and names its classes in the metadata:
#     label [batch] int64: index into the classes
CLASS_INPUT = "label"
CLASSES_KEY = "classes"  # metadata: JSON list of the class names, in index order
