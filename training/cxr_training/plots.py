"""The study's two metric figures, redrawn from the full history each epoch.

- `losses_ssim_mse.png` (the paper's Fig. 6): G and D loss, SSIM and MSE, with the
  real-vs-real reference as a dashed line.
- `discriminator.png` (the paper's Fig. 7): precision and recall, real and fake accuracy.
- `quality.png` (runs with a held-out folder): recall and coverage, KID (log scale),
  diversity and the audit's flags of the sampling generator against the held-out images,
  with the training images' scores (and the real images' diversity) as dashed lines.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from cxr_runtime import quality  # noqa: E402
from cxr_runtime.io import atomic_path  # noqa: E402


def _save(fig, path: Path) -> None:
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)


def plot_history(rows: list[dict], out_dir: Path, baseline: dict | None = None) -> list[Path]:
    """Redraw the figures from the history; `baseline`: the training images' scores against
    the held-out set (keys train_q_recall, ...), drawn as dashed lines."""
    out_dir = Path(out_dir)
    epochs = [r["epoch"] for r in rows]

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    ax = axes[0]
    ax.plot(epochs, [r["g_loss"] for r in rows], "o-", label="G loss")
    ax.plot(epochs, [r["d_loss"] for r in rows], "o-", label="D loss")
    ax.set_title("Losses (epoch mean)")
    for ax, key, title in ((axes[1], "ssim", "SSIM vs real"), (axes[2], "mse", "MSE vs real")):
        ax.plot(epochs, [r[key] for r in rows], "o-", label="generated vs real")
        ax.axhline(rows[-1][f"ref_{key}"], color="grey", ls="--", label="real vs real")
        ax.set_title(title)
    fig6 = _finish(fig, axes, out_dir / "losses_ssim_mse.png")

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    for key in ("d_precision", "d_recall"):
        axes[0].plot(epochs, [r[key] for r in rows], "o-", label=key)
    axes[0].set_title("D precision / recall (real = positive)")
    # heldout_acc: with --heldout, in rows since 2026-12-07; augment_p with augmentation; ADA's
    # validation shares with ada_signal validation (the withheld training images, not --heldout)
    for key in ("real_acc", "fake_acc", "heldout_acc", "ada_probe_real", "ada_withheld_real", "augment_p"):
        if all(key in r for r in rows):
            axes[1].plot(epochs, [r[key] for r in rows], "o-" if key != "augment_p" else "k--", label=key)
    axes[1].set_title("D accuracy on real / generated / held-out real")
    fig7 = _finish(fig, axes, out_dir / "discriminator.png", ylim=(-0.05, 1.05))
    scored = [r for r in rows if "q_kid" in r]
    if not scored:
        return [fig6, fig7]
    base = baseline or {}
    ep = [r["epoch"] for r in scored]
    metrics = quality.QUALITY_METRICS  # one panel per metric of the table, then the audit's flags
    fig, axes = plt.subplots(1, len(metrics) + 1, figsize=(4 * (len(metrics) + 1), 3.6))
    for ax, m in zip(axes, metrics):
        col = m.column(m.key)
        values = [r.get(col, float("nan")) for r in scored]
        if m.log_scale:
            values = [max(v, 1e-4) for v in values]
            ax.set_yscale("log")
        ax.plot(ep, values, "o-", label="generated")
        if m.real_key and m.column(m.real_key) in scored[-1]:
            ax.axhline(scored[-1][m.column(m.real_key)], color="grey", ls="--", label="held-out real")
        elif f"train_{col}" in base:
            line = max(base[f"train_{col}"], 1e-4) if m.log_scale else base[f"train_{col}"]
            ax.axhline(line, color="grey", ls="--", label="training images")
        ax.set_title(f"{m.label} vs held-out ({m.better})", fontsize=9)
    axes[-1].plot(ep, [r.get("audit_flagged", float("nan")) for r in scored], "o-", color="C3", label="flagged images")
    axes[-1].set_title("Memorisation audit flags", fontsize=9)
    fig8 = _finish(fig, axes, out_dir / "quality.png")
    return [fig6, fig7, fig8]


def _finish(fig, axes, path: Path, ylim=None) -> Path:
    """Epoch axis, legend and grid on every panel; the figure written atomically to `path`."""
    for ax in axes:
        ax.set_xlabel("epoch")
        if ylim:
            ax.set_ylim(*ylim)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    _save(fig, path)
    return path
