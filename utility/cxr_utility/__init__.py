"""cxr-utility: does a synthetic X-ray help a diagnostic model? A fixed, documented small CNN
classifier trained on real, synthetic, or real + synthetic images and tested on real held-out
patients (docs/utility.md). Imports cxr_runtime only: it judges images, never the GAN."""

__all__ = ["CLASSES_POSITIVE", "ClassifierSpec"]

from cxr_utility.classifier import CLASSES_POSITIVE, ClassifierSpec
