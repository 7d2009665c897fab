"""A self-contained HTML report: pictures embedded as base64 PNG, charts as inline SVG,
no script, no external file, so it can be mailed or archived as one file."""

from __future__ import annotations

import base64
import html
import time

import numpy as np

from cxr_runtime import __version__

MAX_PAIRS = 24


def encode_data_uri(image_u8: np.ndarray) -> str:
    from cxr_runtime.images import encode_png

    return "data:image/png;base64," + base64.b64encode(encode_png(image_u8)).decode("ascii")


def _histogram_svg(series: dict[str, np.ndarray], threshold: float, width=520, height=180, hi: float = 1.0) -> str:
    """Overlaid histograms of nearest-neighbour scores in [0, hi], with the flag threshold."""
    bins = np.linspace(0.0, hi, 41)
    colours = ["#1f77b4", "#ff7f0e", "#2ca02c"]
    hists = {k: np.histogram(v, bins)[0] / max(len(v), 1) for k, v in series.items()}
    top = max((h.max() for h in hists.values()), default=1.0) or 1.0
    pad, w, h = 30, width - 40, height - 40
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img">',
             f'<rect x="{pad}" y="10" width="{w}" height="{h}" fill="none" stroke="#999"/>']
    bw = w / (len(bins) - 1)
    for c, (name, hist) in enumerate(hists.items()):
        for i, v in enumerate(hist):
            bh = h * v / top
            parts.append(f'<rect x="{pad + i * bw + c * bw / len(hists):.1f}" y="{10 + h - bh:.1f}" '
                         f'width="{bw / len(hists):.1f}" height="{bh:.1f}" fill="{colours[c % 3]}" opacity="0.8"/>')
        parts.append(f'<text x="{pad + 8}" y="{26 + 14 * c}" font-size="12" fill="{colours[c % 3]}">'
                     f'{html.escape(name)}</text>')
    tx = pad + w * threshold / hi
    parts.append(f'<line x1="{tx:.1f}" y1="10" x2="{tx:.1f}" y2="{10 + h}" stroke="red" stroke-dasharray="4"/>')
    parts.append(f'<text x="{tx - 60:.1f}" y="{height - 14}" font-size="11" fill="red">flag at {threshold}</text>')
    for x in (0.0, hi / 2, hi):
        parts.append(f'<text x="{pad + w * x / hi - 8:.1f}" y="{height - 2}" font-size="11">{x:.1f}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _utility_section(result: dict, source: str) -> str:
    from cxr_runtime.utility_table import html_tables

    seeds = len(result.get("seeds") or ())
    return f"""<h2>What the images do for a classifier</h2>
<div id="utility">
<p>From {html.escape(source)} (<code>cxr-utility protocols</code>): a fixed small CNN trained on real images (TRTR),
synthetic images alone (TSTR), real with synthetic images, or real with classically augmented copies, each
with {seeds or "several"} seeds, tested on real held-out patients ({html.escape(str(result.get("test", "")))}).
AUC with its 95 % interval (bootstrap over test images and seeds); differences are paired. Label fidelity: the
share of each class's synthetic images that the real-trained classifier puts in the requested class.
Definitions: docs/utility.md.</p>
{html_tables(result)}
</div>"""


def build_report(fake, real, train, utility: dict | None = None, utility_source: str = "") -> str:
    """`fake`, `real`, `train`: cxr_runtime.images.ImageSet; `utility`: a `cxr-utility protocols`
    result (cxr_runtime.utility_table.load), shown as its own section. Returns the HTML page."""
    from cxr_runtime import audit as au
    from cxr_runtime import quality as q
    from cxr_runtime.images import make_grid, side_by_side, to_uint8
    from cxr_runtime.onnx_metrics import OnnxScorer

    scorer = OnnxScorer(device="auto")
    ssim, mse = scorer.paired_ssim_mse(fake.images, real.images)
    base_ssim, base_mse = scorer.paired_ssim_mse(train.images, real.images)  # the baseline: training vs real
    real_set = q.RealSet(real.images, scorer)
    qual = real_set.score(fake.images, scorer)
    qbase = real_set.score(train.images, scorer)
    result = au.audit(fake.images, train.images, real.images)
    s = result["summary"]
    rows = [
        ("SSIM vs real (paired)", f"{ssim:.4f}", f"{base_ssim:.4f}", "study's metric; rewards average images"),
        ("MSE vs real (paired)", f"{mse:.4f}", f"{base_mse:.4f}", "study's metric; rewards average images"),
        *((m.label, m.text(qual) + (f" (real {qual[m.real_key]:{m.fmt}})" if m.real_key else ""), m.text(qbase),
           f"{m.better} is better" + (f"; {m.citation}" if m.citation else ""))
          for m in q.QUALITY_METRICS),
    ]
    table = "".join(f"<tr><td>{html.escape(n)}</td><td>{html.escape(v)}</td><td>{html.escape(r)}</td>"
                    f"<td>{html.escape(c)}</td></tr>" for n, v, r, c in rows)
    grid = encode_data_uri(make_grid(fake.images[:16]))
    nn = result["nn"]
    pairs = []
    for i in result["flagged"][:MAX_PAIRS]:
        j = int(nn["index"][i])
        registered = au.registered_pair(fake.images[i], train.images[j], nn, i)
        pic = encode_data_uri(np.concatenate([side_by_side(fake.images[i], train.images[j]),
                                              np.zeros((fake.images.shape[1], 4), np.uint8),
                                              to_uint8(registered)], axis=1))
        pairs.append(f'<figure><img src="{pic}" alt="flagged pair"><figcaption>{html.escape(fake.files[i])} vs '
                     f'{html.escape(train.files[j])}{" (mirrored)" if nn["mirrored"][i] else ""}: NCC '
                     f'{nn["ncc"][i]:.3f}, detail {nn["detail"][i]:.3f}</figcaption></figure>')
    hist = _histogram_svg({"generated vs training": au.copy_score(nn["ncc"], nn["detail"]),
                           "real (not trained on) vs training": au.copy_score(result["heldout_nn"]["ncc"],
                                                                             result["heldout_nn"]["detail"])}, 1.0,
                          hi=1.2)
    verdict = (f'<p class="bad">{s["flagged"]} of {s["generated"]} generated images flagged as copies of training '
               f"images.</p>" if s["flagged"] else
               f'<p class="good">No generated image flagged (0 of {s["generated"]}).</p>')
    dup_note = (f'; <span class="bad" id="duplicates">{len(fake.duplicates)} of them byte-identical copies of another '
                f"generated image</span>" if getattr(fake, "duplicates", None) else "")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>cxr-gan report</title>
<style>body{{font-family:sans-serif;max-width:1000px;margin:2em auto;color:#222}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left}}
.bad{{color:#b00;font-weight:bold}}.good{{color:#070;font-weight:bold}}figure{{display:inline-block;margin:6px}}
img{{image-rendering:pixelated}}</style></head><body>
<h1>cxr-gan: synthetic chest X-ray report</h1>
<p>All generated images are synthetic and depict no real patient. Generated: {len(fake.files)} images
({html.escape(str(fake.root))}{dup_note}); real: {len(real.files)} ({html.escape(str(real.root))}); training:
{len(train.files)} ({html.escape(str(train.root))}). cxr-runtime {__version__}, {time.strftime("%Y-%m-%d %H:%M")}.</p>
<h2>Samples</h2><img id="grid" src="{grid}" alt="sample grid" width="520">
<h2>Metrics</h2>
<table id="metrics"><tr><th>metric</th><th>generated vs real</th><th>training vs real (baseline)</th><th>reading</th></tr>
{table}</table>
<p>Definitions: docs/metrics.md. ±: the 95 % interval, resampling both image sets (jackknife). The baseline
column scores the real training images against the same real images: the value a generator as faithful and
varied as real data would reach; a metric is as good as real data when its interval overlaps the
baseline's.</p>
<h2>Memorisation audit</h2>
{verdict}
<p>What this proves: {html.escape(s["proves"])}. It does not prove that no patient can be recognised in a
generated image by other means.</p>
<p>Nearest training image by {html.escape(s["similarity"])}; {html.escape(s["rule"])}. Generated: NCC median
{s["nn_ncc"]["p50"]:.3f}, max {s["nn_ncc"]["max"]:.3f}; detail median {s["nn_detail"]["p50"]:.3f}, max
{s["nn_detail"]["max"]:.3f}. Real images not trained on: NCC median {s["heldout"]["nn_ncc"]["p50"]:.3f}, max
{s["heldout"]["nn_ncc"]["max"]:.3f}; detail median {s["heldout"]["nn_detail"]["p50"]:.3f}, max
{s["heldout"]["nn_detail"]["max"]:.3f}. Histogram: the copy score max(NCC / {s["threshold"]:g},
detail / {s["detail_threshold"]:g}), flagged at 1. Pairs: generated | nearest training image | that image
registered onto the generated one.</p>
<div id="histogram">{hist}</div>
<div id="pairs">{"".join(pairs)}</div>
{_utility_section(utility, utility_source) if utility else ""}
</body></html>
"""
