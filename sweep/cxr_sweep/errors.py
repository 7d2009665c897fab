"""The sweep's error, under cxr_runtime.CxrError (exit code 2)."""

from __future__ import annotations

from cxr_runtime.errors import CxrError


class SweepError(CxrError):
    """A bad plan, run root or stage failure of cxr-sweep."""
