"""cxr-utility's errors, under the project's CxrError (one line and exit code 2 on the CLI)."""

from __future__ import annotations

from cxr_runtime.errors import CxrError


class LabelledFolderError(CxrError, ValueError):
    """A labelled folder that cannot be used (no class subfolders, classes that do not match, a
    class with fewer images than a subset asks for)."""
