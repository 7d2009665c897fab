"""One metric table: a metric added to cxr_runtime.quality.QUALITY_METRICS (one function, one
row) reaches every output: evaluate (text and --json), report.html, the epoch-end monitor and
its log line, metrics.jsonl and metrics.csv, the quality plot and the sweep's table."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from cxr_runtime import quality
from cxr_runtime.images import load_folder


@pytest.fixture
def toy_metric(monkeypatch):
    """A toy metric: the mean brightness of the generated images minus the real ones'."""

    def brightness_gap(s: quality.Scoring) -> dict[str, float]:
        return {"brightness_gap": float(np.mean(s.fake) - s.real.brightness)}

    metric = quality.QualityMetric("brightness_gap", "brightness gap", brightness_gap, "near 0", fmt=".5f")
    monkeypatch.setattr(quality, "QUALITY_METRICS", [*quality.QUALITY_METRICS, metric])
    original = quality.RealSet.__init__

    def init(self, real, *a, **k):
        original(self, real, *a, **k)
        self.brightness = float(np.mean(real))

    monkeypatch.setattr(quality.RealSet, "__init__", init)
    return metric


def test_a_new_metric_reaches_every_output(toy_metric, few_real, few_heldout, tmp_path, monkeypatch):
    import cxr_sweep as sweep
    from cxr_runtime.cli import main as runtime_cli
    from cxr_runtime.report import build_report
    from cxr_training import plots
    from cxr_training.epoch import describe_quality
    from cxr_training.evaluate import QualityMonitor
    from cxr_training.runs import read_history, write_history

    real, held = load_folder(few_real), load_folder(few_heldout)
    expected = float(np.mean(real.images) - np.mean(held.images))

    # evaluate: --json and text
    r = CliRunner().invoke(runtime_cli, ["evaluate", "--fake", str(few_real), "--real", str(few_heldout), "--quality",
                                         "--json", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    got = json.loads(r.output)["quality"]["brightness_gap"]
    assert got == pytest.approx(expected, abs=1e-6)
    r = CliRunner().invoke(runtime_cli, ["evaluate", "--fake", str(few_real), "--real", str(few_heldout), "--quality",
                                         "--device", "cpu"])
    assert r.exit_code == 0 and "brightness gap" in r.output and f"{got:.5f} ± " in r.output and "[near 0]" in r.output

    # report.html
    html = build_report(real, held, real)
    assert "brightness gap" in html

    # the epoch-end monitor, its log line, the run files
    monitor = QualityMonitor(held.images, real.images, 8, 4, 0)
    row = {"epoch": 1, "step": 3, **monitor.score(lambda z: real.images[: len(z)])}
    assert row["q_brightness_gap"] == pytest.approx(expected, abs=1e-6)
    assert "brightness gap" in describe_quality(row)
    write_history(tmp_path, [row])
    assert read_history(tmp_path)[0]["q_brightness_gap"] == row["q_brightness_gap"]
    header = (tmp_path / "metrics.csv").read_text().splitlines()[0].split(",")
    assert "q_brightness_gap" in header and "q_kid" in header

    # the quality plot: one panel per metric of the table, plus the audit's
    panels = []
    real_subplots = plots.plt.subplots
    monkeypatch.setattr(plots.plt, "subplots", lambda *a, **k: (panels.append(a), real_subplots(*a, **k))[1])
    plots.plot_history([{**row, "g_loss": 1.0, "d_loss": 1.0, "ssim": 0.1, "mse": 0.1, "ref_ssim": 0.2, "ref_mse": 0.1,
                         "d_precision": 0.5, "d_recall": 0.5, "real_acc": 0.5, "fake_acc": 0.5}], tmp_path / "plots")
    assert (1, len(quality.QUALITY_METRICS) + 1) in panels and (tmp_path / "plots" / "quality.png").is_file()

    # the sweep's table
    sweep_row = {"run": "a", "step": 3, "weights": "raw", "metrics": {**json.loads(
        CliRunner().invoke(runtime_cli, ["evaluate", "--fake", str(few_real), "--real", str(few_heldout),
                                         "--quality", "--json", "--device", "cpu"]).output)["quality"]},
                 "audit": {"flagged": 0, "generated": 8}, "seconds_per_step": 1.0, "train_seconds": 3600, "cpu": ["x"],
                 "heldout": str(few_heldout)}
    table = sweep.table([sweep_row])
    assert "brightness gap" in table.splitlines()[0] and f"{got:.2f}" in table.splitlines()[2]


def test_rows_written_before_the_rename_are_read_under_the_new_names(tmp_path):
    """D's precision and recall were `precision` and `recall` in older runs: a resumed or plotted
    old run reads them as d_precision and d_recall, and rewrites them so."""
    from cxr_training.runs import read_history, write_history

    (tmp_path / "metrics.jsonl").write_text(json.dumps({"epoch": 1, "step": 50, "precision": 0.6, "recall": 0.9,
                                                        "q_recall": 0.1}) + "\n")
    rows = read_history(tmp_path)
    assert rows == [{"epoch": 1, "step": 50, "d_precision": 0.6, "d_recall": 0.9, "q_recall": 0.1}]
    write_history(tmp_path, rows)
    header = (tmp_path / "metrics.csv").read_text().splitlines()[0].split(",")
    assert "d_precision" in header and "precision" not in header
