"""cxr_training: the study's GAN in TensorFlow/Keras, its training loop and metric suite.

Imports cxr_runtime for everything the runtime also needs (image reading, metrics, file
writing). TensorFlow is imported by the modules that need it, not here, so
`cxr-train --help` answers at once.
"""
