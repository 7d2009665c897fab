"""Shared fixtures. Real images come from one place: the shared kermany-cxr sample.

Outside CI a missing data folder skips the tests that need it, with a clear message;
under CI=true it is a failure, so a green CI always means the real-data tests ran.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

try:  # the tests run TensorFlow as the commands do (cxr_training.tfenv.configure); absent in the runtime venv
    from cxr_training.tfenv import configure

    configure()
except ImportError:
    pass

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("CXR_TEST_DATA", ROOT.parent / "shared" / "data" / "kermany-cxr"))


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Never read or write the user's preprocessing cache from tests."""
    monkeypatch.setenv("CXR_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture(scope="session")
def kermany() -> Path:
    """Root of the shared real-image sample (train/NORMAL, heldout/NORMAL, PNEUMONIA)."""
    if not (DATA / "train" / "NORMAL").is_dir():
        msg = f"real test images not found at {DATA} (set CXR_TEST_DATA)"
        if os.environ.get("CI") == "true":
            pytest.fail(msg)
        pytest.skip(msg)
    return DATA


@pytest.fixture(scope="session")
def train_normal(kermany) -> Path:
    return kermany / "train" / "NORMAL"


@pytest.fixture
def few_real(train_normal, tmp_path) -> Path:
    """A folder with symlinks to the first 8 real training images."""
    folder = tmp_path / "few"
    folder.mkdir()
    for p in sorted(train_normal.iterdir())[:8]:
        (folder / p.name).symlink_to(p)
    return folder


@pytest.fixture
def few_heldout(kermany, tmp_path) -> Path:
    """A folder with symlinks to the first 10 held-out real images (other patients)."""
    folder = tmp_path / "held"
    folder.mkdir()
    for p in sorted((kermany / "heldout" / "NORMAL").iterdir())[:10]:
        (folder / p.name).symlink_to(p)
    return folder
