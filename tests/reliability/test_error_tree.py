"""One error root: every exception class the project defines derives from cxr_runtime.CxrError,
each says its exit code, and the CLIs turn them into one line through one helper."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import subprocess
import sys

import pytest

from cxr_runtime.errors import EXIT_USER_ERROR, CxrError, reported

PACKAGES = ("cxr_runtime", "cxr_training", "cxr_export", "cxr_utility", "cxr_sweep")
OPTIONAL = ("ray", "pydicom")  # extras a module may need; without them it is not walked


def _our_exception_classes():
    found = {}
    for name in PACKAGES:
        package = importlib.import_module(name)
        for info in pkgutil.walk_packages(package.__path__, prefix=f"{name}."):
            try:
                module = importlib.import_module(info.name)
            except ImportError as e:
                if getattr(e, "name", None) in OPTIONAL:
                    continue
                raise
            for _, obj in inspect.getmembers(module, inspect.isclass):
                if issubclass(obj, BaseException) and obj.__module__.split(".")[0] in PACKAGES:
                    found[f"{obj.__module__}.{obj.__qualname__}"] = obj
    return found


def test_every_exception_class_of_the_project_is_under_cxr_error():
    classes = _our_exception_classes()
    assert len(classes) >= 20, sorted(classes)  # the walk found the three packages' errors
    outside = sorted(name for name, cls in classes.items() if not issubclass(cls, CxrError))
    assert outside == [], f"exception classes outside the CxrError tree: {outside}"
    for name, cls in classes.items():
        assert isinstance(cls.exit_code, int) and cls.exit_code in (1, 2), name


def test_every_exception_class_lives_in_its_packages_errors_module():
    """docs/contributing.md: each package's errors in its errors.py (cxr_runtime's in
    cxr_runtime/errors.py, not beside Ray sampling)."""
    elsewhere = sorted(name for name, cls in _our_exception_classes().items()
                       if cls.__module__ != cls.__module__.split(".")[0] + ".errors")
    assert elsewhere == [], f"exception classes outside their package's errors.py: {elsewhere}"


def test_the_walk_would_find_a_class_outside_the_tree(monkeypatch):
    """The check above can fail: a module-level exception class not derived from CxrError."""
    import cxr_runtime.io as io_module

    class Stray(ValueError):
        pass

    Stray.__module__ = "cxr_runtime.io"
    monkeypatch.setattr(io_module, "Stray", Stray, raising=False)
    classes = _our_exception_classes()
    assert "cxr_runtime.io.test_the_walk_would_find_a_class_outside_the_tree.<locals>.Stray" in classes
    assert not issubclass(classes["cxr_runtime.io.test_the_walk_would_find_a_class_outside_the_tree.<locals>.Stray"],
                          CxrError)


def test_reported_is_one_line_with_the_errors_exit_code(capsys):
    from cxr_export.errors import ParityError
    from cxr_training.errors import Interrupted, TrainingError

    for error, code in ((TrainingError("bad data"), EXIT_USER_ERROR), (ParityError("off by 1e-3"), 1),
                        (Interrupted("stopped", 15), 143)):
        with pytest.raises(SystemExit) as e, reported():
            raise error
        assert e.value.code == code
        assert capsys.readouterr().err == f"error: {error}\n"
    with pytest.raises(KeyError), reported():  # anything else keeps its traceback
        raise KeyError("unexpected")


@pytest.mark.parametrize("argv, code, words", [
    (["-m", "cxr_export.cli", "/nonexistent/run", "--out", "/tmp/x.onnx"], 2, "not found"),
    (["-m", "cxr_runtime.cli", "info", "/nonexistent.onnx"], 2, "error:"),
])
def test_clis_answer_user_errors_in_one_line(argv, code, words):
    r = subprocess.run([sys.executable, *argv], capture_output=True, text=True, timeout=300)
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert r.returncode == code and len(lines) == 1 and lines[0].startswith("error:") and words in lines[0], r.stderr
