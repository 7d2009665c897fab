"""The named choices shared by the library and its command lines, in one place. Nothing
heavy is imported here, so the CLIs can build their options (and answer --version) fast."""

DEVICES = ("auto", "cuda", "cpu")  # session.py's device rules; "cuda:N" also picks GPU N
RESIZE_MODES = ("stretch", "crop")  # images.preprocess: how a non-square image becomes square
SAMPLE_FORMATS = ("png", "npy", "dicom")  # sampling.sample_to_folder's file formats
