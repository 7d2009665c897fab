"""SSIM and MSE as ONNX graphs, run by onnxruntime on the same device rules as sampling.

`cxr_runtime.metrics` (numpy, float64) stays the reference; these graphs compute the same
numbers in float32 (they agree within 1e-5, tested) and much faster, so scoring runs on the
engine and device that sample, and every-image-against-every-image comparisons are practical.

How the Gaussian filter runs: the 11x11 window is separable, and its "valid" filtering along
one axis is a product with a banded matrix G (W x (W-10), column j holding the 11 weights at
rows j..j+10). Filtering an image X is then G_h^T X G_w: two matrix products that run at
GEMM speed, which on CPU beat a depthwise convolution (measured 37.6k vs 17.8k filtered
128x128 maps/s on 2 cores) although they multiply by zeros.

Three graphs, built once per image size with onnx.helper:
- pairs: x, y [P, H, W] -> ssim [P], mse [P]. Four filtered maps per pair: mu_x, mu_y,
  F(x^2 + y^2) (one map for both variances, as tf.image.ssim does) and F(xy).
- stats: a [N, H, W] -> mu [N, h, w], var [N, h, w], mean of squares [N]: per-image terms
  of the cross graph, computed once per image instead of once per pair.
- cross: a tile of set A and a tile of set B, with their stats -> ssim [a, b], mse [a, b].
  One filtered map per pair, F(a_i b_j); MSE from means: mean(a^2) + mean(b^2) - 2 mean(ab).
"""

from __future__ import annotations

import functools

import numpy as np

from cxr_runtime.metrics import DATA_RANGE, SSIM_K1, SSIM_K2, SSIM_SIGMA, SSIM_WINDOW, gaussian_kernel_1d
from cxr_runtime.session import open_session

OPSET = 18  # ReduceMean takes its axes as an input from opset 18
CROSS_TILE_A = 1  # images of A per cross call
CROSS_TILE_B = 32  # images of B per cross call: 32 per-pair maps (1.8 MB) stay in a core's L2 cache;
# measured 30k pairs/s against 24k with all 138 of B per call (docs/benchmarks.md)
PAIR_CHUNK = 8  # pairs per call of the pairs graph: small calls keep the maps in cache (7.2k vs 4.4k pairs/s at 64)


def _banded(n: int, window: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> np.ndarray:
    g = gaussian_kernel_1d(window, sigma).astype(np.float32)
    band = np.zeros((n, n - window + 1), np.float32)
    for j in range(n - window + 1):
        band[j : j + window, j] = g
    return band


class _Graph:
    """Small helper to write graphs: named constants and nodes."""

    def __init__(self):
        from onnx import helper, numpy_helper

        self.helper, self.numpy_helper = helper, numpy_helper
        self.nodes, self.inits = [], []
        self.n = 0

    def const(self, name, value):
        self.inits.append(self.numpy_helper.from_array(np.asarray(value), name))
        return name

    def op(self, op_type, *inputs, out=None, **attrs):
        self.n += 1
        out = out or f"t{self.n}_{op_type.lower()}"
        self.nodes.append(self.helper.make_node(op_type, list(inputs), [out], name=out, **attrs))
        return out

    def filt(self, x):
        """Valid Gaussian filtering of [..., H, W] -> [..., h, w]: G_h^T x G_w."""
        return self.op("MatMul", "ght", self.op("MatMul", x, "gw"))

    def model(self, name, inputs, outputs):
        from onnx import TensorProto

        h = self.helper
        graph = h.make_graph(
            self.nodes, name,
            [h.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
            [h.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in outputs],
            initializer=self.inits,
        )
        m = h.make_model(graph, opset_imports=[h.make_opsetid("", OPSET)], producer_name="cxr-runtime")
        m.ir_version = 8
        return m


def _constants(g: _Graph, size: int, data_range: float) -> None:
    band = _banded(size)
    g.const("gw", band)
    g.const("ght", np.ascontiguousarray(band.T))
    g.const("two", np.float32(2.0))
    g.const("c1", np.float32((SSIM_K1 * data_range) ** 2))
    g.const("c2", np.float32((SSIM_K2 * data_range) ** 2))


def _ssim_map(g: _Graph, mxy, msq, fxy, var_sum):
    """(2 mxy + c1)(2 (fxy - mxy) + c2) / ((msq + c1)(var_sum + c2))."""
    lum = g.op("Div", g.op("Add", g.op("Mul", mxy, "two"), "c1"), g.op("Add", msq, "c1"))
    cov2 = g.op("Mul", g.op("Sub", fxy, mxy), "two")
    cs = g.op("Div", g.op("Add", cov2, "c2"), g.op("Add", var_sum, "c2"))
    return g.op("Mul", lum, cs)


@functools.lru_cache(maxsize=8)
def pairs_model(size: int, data_range: float = DATA_RANGE) -> bytes:
    g = _Graph()
    _constants(g, size, data_range)
    mx, my = g.filt("x"), g.filt("y")
    fs = g.filt(g.op("Add", g.op("Mul", "x", "x"), g.op("Mul", "y", "y")))
    fxy = g.filt(g.op("Mul", "x", "y"))
    mxy = g.op("Mul", mx, my)
    msq = g.op("Add", g.op("Mul", mx, mx), g.op("Mul", my, my))
    smap = _ssim_map(g, mxy, msq, fxy, g.op("Sub", fs, msq))
    g.op("ReduceMean", smap, g.const("hw", np.array([1, 2], np.int64)), out="ssim", keepdims=0)
    d = g.op("Sub", "x", "y")
    g.op("ReduceMean", g.op("Mul", d, d), "hw", out="mse", keepdims=0)
    shape = ["n", size, size]
    return g.model("ssim_pairs", [("x", shape), ("y", shape)], [("ssim", ["n"]), ("mse", ["n"])]).SerializeToString()


@functools.lru_cache(maxsize=8)
def stats_model(size: int, data_range: float = DATA_RANGE) -> bytes:
    """Per-image terms of the cross graph, with its constants folded in (is_a = 1 for set A,
    0 for set B): mu2 = (1 + is_a) mu, p = mu^2 + is_a c1, v = var + is_a c2, meansq = mean(a^2)."""
    g = _Graph()
    _constants(g, size, data_range)
    mu = g.filt("a")
    sq = g.op("Mul", "a", "a")
    mu_sq = g.op("Mul", mu, mu)
    g.op("Mul", mu, g.op("Add", "is_a", g.const("one", np.float32(1.0))), out="mu2")
    g.op("Add", mu_sq, g.op("Mul", "c1", "is_a"), out="p")
    g.op("Add", g.op("Sub", g.filt(sq), mu_sq), g.op("Mul", "c2", "is_a"), out="v")
    g.op("ReduceMean", sq, g.const("hw", np.array([1, 2], np.int64)), out="meansq", keepdims=0)
    h = size - SSIM_WINDOW + 1
    return g.model("ssim_stats", [("a", ["n", size, size]), ("is_a", [])],
                   [("mu2", ["n", h, h]), ("p", ["n", h, h]), ("v", ["n", h, h]), ("meansq", ["n"])]).SerializeToString()


@functools.lru_cache(maxsize=8)
def cross_model(size: int, data_range: float = DATA_RANGE) -> bytes:
    """SSIM = n1 n2 / (d1 d2) with, per pair (i, j):
    n1 = 2 mu_i mu_j + c1          = mu2_i * mu_j + c1   (mu2 = 2 mu for A, mu for B)
    n2 = 2 (F(ab) - mu_i mu_j) + c2 = F2(ab) - n1 + c1 + c2   (F2: the filter with weights x2)
    d1 = mu_i^2 + mu_j^2 + c1       = p_i + p_j   (c1 folded into p_i)
    d2 = var_i + var_j + c2         = v_i + v_j   (c2 folded into v_i)
    which takes ten elementwise passes over the per-pair maps instead of fourteen."""
    g = _Graph()
    _constants(g, size, data_range)
    band2 = 2.0 * _banded(size)
    g.const("gw2", band2)
    h = size - SSIM_WINDOW + 1
    ax1 = g.const("ax1", np.array([1], np.int64))
    ax0 = g.const("ax0", np.array([0], np.int64))
    g.const("c12", np.float32((SSIM_K1 * data_range) ** 2 + (SSIM_K2 * data_range) ** 2))

    def outer(op, a, b):  # [a, ...] op [b, ...] -> [a, b, ...]
        return g.op(op, g.op("Unsqueeze", a, ax1), g.op("Unsqueeze", b, ax0))

    prod = outer("Mul", "a", "b")  # [a, b, H, W]
    f2xy = g.op("MatMul", "ght", g.op("MatMul", prod, "gw2"))  # 2 F(ab): [a, b, h, w]
    n1 = g.op("Add", outer("Mul", "mu2_a", "mu2_b"), "c1")  # mu2_b holds mu for set B
    n2 = g.op("Add", g.op("Sub", f2xy, n1), "c12")
    den = g.op("Mul", outer("Add", "p_a", "p_b"), outer("Add", "v_a", "v_b"))
    smap = g.op("Div", g.op("Mul", n1, n2), den)
    hw = g.const("hw", np.array([2, 3], np.int64))
    g.op("ReduceMean", smap, hw, out="ssim", keepdims=0)
    mean_ab = g.op("ReduceMean", prod, hw, keepdims=0)
    g.op("Sub", outer("Add", "meansq_a", "meansq_b"), g.op("Mul", mean_ab, "two"), out="mse")
    img, st = ["n", size, size], ["n", h, h]
    inputs = [("a", img), ("mu2_a", st), ("p_a", st), ("v_a", st), ("meansq_a", ["n"]),
              ("b", ["m", size, size]), ("mu2_b", ["m", h, h]), ("p_b", ["m", h, h]), ("v_b", ["m", h, h]),
              ("meansq_b", ["m"])]
    return g.model("ssim_cross", inputs, [("ssim", ["n", "m"]), ("mse", ["n", "m"])]).SerializeToString()


def _as_images(x) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 4 and x.shape[-1] == 1:
        x = x[..., 0]
    elif x.ndim == 4 and x.shape[1] == 1:
        x = x[:, 0]
    if x.ndim == 2:
        x = x[None]
    if x.ndim != 3 or x.shape[1] != x.shape[2]:
        raise ValueError(f"expected square images (N, S, S), got shape {x.shape}")
    if x.shape[1] < SSIM_WINDOW:
        raise ValueError(f"images must be at least {SSIM_WINDOW}x{SSIM_WINDOW}, got {x.shape[1:]}")
    return np.ascontiguousarray(x)


class OnnxScorer:
    """SSIM/MSE on onnxruntime. `device` follows the sampling rules (auto|cuda|cuda:N|cpu)."""

    def __init__(self, device: str = "auto", threads: int | None = None):
        self.device, self.threads = device, threads
        self._sessions: dict = {}
        self.provider: str | None = None

    def _session(self, kind: str, size: int):
        key = (kind, size)
        if key not in self._sessions:
            blob = {"pairs": pairs_model, "stats": stats_model, "cross": cross_model}[kind](size)
            # the memory arena on: these graphs allocate the same few MB-sized maps on every call,
            # and without the arena each is a fresh mmap that page-faults again
            session, self.provider = open_session(blob, self.device, threads=self.threads, arena=True)
            self._sessions[key] = session
        return self._sessions[key]

    def ssim_mse(self, x, y) -> tuple[np.ndarray, np.ndarray]:
        """Per-pair SSIM and MSE of (x[i], y[i]), as float64 arrays of shape (N,)."""
        x, y = _as_images(x), _as_images(y)
        if x.shape != y.shape:
            raise ValueError(f"shape mismatch: {x.shape} vs {y.shape}")
        sess = self._session("pairs", x.shape[1])
        s, m = [], []
        for i in range(0, len(x), PAIR_CHUNK):
            out = sess.run(["ssim", "mse"], {"x": x[i : i + PAIR_CHUNK], "y": y[i : i + PAIR_CHUNK]})
            s.append(out[0])
            m.append(out[1])
        return np.concatenate(s).astype(np.float64), np.concatenate(m).astype(np.float64)

    def stats(self, a, is_a: bool) -> dict[str, np.ndarray]:
        a = _as_images(a)
        sess = self._session("stats", a.shape[1])
        flag = np.array(1.0 if is_a else 0.0, np.float32)
        names = ("mu2", "p", "v", "meansq")
        parts = [sess.run(list(names), {"a": a[i : i + PAIR_CHUNK], "is_a": flag}) for i in range(0, len(a), PAIR_CHUNK)]
        return {"images": a, **{k: np.concatenate([p[j] for p in parts]) for j, k in enumerate(names)}}

    def cross(self, a, b, tile: int = CROSS_TILE_A, tile_b: int = CROSS_TILE_B,
              progress=None) -> tuple[np.ndarray, np.ndarray]:
        """SSIM and MSE of every a[i] against every b[j]: two (len(a), len(b)) float64 matrices.

        Tiles of `tile` images of A against `tile_b` images of B per call; the per-image
        filtered terms are computed once per image (`stats`), so each pair costs one filtered
        map. `progress(done)` is called after each row of tiles with the number of A images done.
        """
        a = _as_images(a)
        sb = self.stats(b, False)
        if a.shape[1:] != sb["images"].shape[1:]:
            raise ValueError(f"image sizes differ: {a.shape[1:]} vs {sb['images'].shape[1:]}")
        sess = self._session("cross", a.shape[1])
        n, m = len(a), len(sb["images"])
        ssim, mse = np.empty((n, m), np.float64), np.empty((n, m), np.float64)
        names_a = {"a": "images", "mu2_a": "mu2", "p_a": "p", "v_a": "v", "meansq_a": "meansq"}
        names_b = {"b": "images", "mu2_b": "mu2", "p_b": "p", "v_b": "v", "meansq_b": "meansq"}
        feeds_b = [(slice(k, k + tile_b), {name: sb[key][k : k + tile_b] for name, key in names_b.items()})
                   for k in range(0, m, tile_b)]
        block = max(tile, 64)  # A's per-image terms are computed a block at a time: memory stays flat in len(a)
        for start in range(0, n, block):
            sa = self.stats(a[start : start + block], True)
            for i in range(0, len(sa["images"]), tile):
                rows = slice(start + i, start + i + tile)
                feed_a = {name: sa[key][i : i + tile] for name, key in names_a.items()}
                for cols, feed_b in feeds_b:
                    ssim[rows, cols], mse[rows, cols] = sess.run(["ssim", "mse"], {**feed_a, **feed_b})
                if progress:
                    progress(min(start + i + tile, n))
        return ssim, mse

    def paired_ssim_mse(self, fake, real, seed: int | None = None) -> tuple[float, float]:
        """The study's protocol (see metrics.paired_ssim_mse), computed on onnxruntime."""
        from cxr_runtime.metrics import PAIRING_SEED, pairing

        fake, real = _as_images(fake), _as_images(real)
        idx = pairing(len(fake), len(real), PAIRING_SEED if seed is None else seed)
        s, m = self.ssim_mse(fake, real[idx])
        return float(s.mean()), float(m.mean())

    def real_reference(self, real, seed: int | None = None) -> tuple[float, float]:
        from cxr_runtime.metrics import PAIRING_SEED, derangement

        real = _as_images(real)
        idx = derangement(len(real), PAIRING_SEED if seed is None else seed)
        s, m = self.ssim_mse(real, real[idx])
        return float(s.mean()), float(m.mean())
