"""Training configuration: one frozen dataclass and its named presets.

The CLI only overrides fields of a preset; the resolved config is written to the run
folder before step 0 and is the single source of truth when a run is resumed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field

from cxr_runtime.choices import RESIZE_MODES
from cxr_training.precision import CHOICES as PRECISIONS

AUGMENT_MODES = ("off", "fixed", "adaptive")
ADA_SIGNALS = ("train", "validation")
AUGMENT_TRANSFORMS = ("color", "translation", "cutout")


def opt(default, help: str, *, flag: str | None = None, choices=None, lo=None, hi=None, lo_open=False,
        hi_open=False, item: type | None = None, cli: bool = True):
    """A Config field with what its cxr-train flag needs (cli.py builds every flag from these):
    `help`, the flag's name (default: --field-name; booleans get --x/--no-x), `choices`, a
    numeric range [lo, hi] (open ends with lo_open/hi_open), and for tuples the `item` type.
    `cli=False`: no flag (the preset name has its own option)."""
    meta = {"help": help, "flag": flag, "choices": choices, "lo": lo, "hi": hi, "lo_open": lo_open,
            "hi_open": hi_open, "item": item, "cli": cli}
    return field(default=default, metadata=meta)


# Config fields that only say when to write what, or how exactly to compute it (not what is
# trained): outside Config.hash.
UNHASHED = frozenset({"checkpoint_minutes", "deterministic"})
# Fields that only a labelled run (classes set) reads.
UNLABELLED_NO_EFFECT = frozenset({"d_condition"})
# Fields added after runs were recorded: left out of Config.hash while at their default (off), so
# that a run recorded before the field existed keeps its hash (and its rows their recipe).
HASHED_WHEN_SET = frozenset({"d_patch", "g_refine", "g_supersample", "g_detail", "g_detail_patch", "d_spectrum",
                             "d_spectrum_tile", "g_upsample_last", "ada_signal", "ada_validation", "ada_gap",
                             "lecam", "lecam_decay"})


@dataclass(frozen=True)
class Config:
    # --- identity -------------------------------------------------------------------
    preset: str = opt("paper", "The preset this config started from (run folder suffix).", cli=False)

    # The classes of a labelled run, from the data's subfolders (cxr-train --data DIR with one
    # subfolder per class); empty: unconditional, as the study.
    classes: tuple[str, ...] = opt((), "Class names of a labelled run (the data's subfolders, set by cxr-train).",
                                   cli=False, item=str)

    # --- architecture (the paper's by default; see docs/training.md) ------------------
    image_size: int = opt(128, "Generated and training images are image_size x image_size x 1.", lo=8)
    latent_dim: int = opt(100, "Length of the noise vector z.", lo=1)
    g_dense_channels: int = opt(256, "Channels of G's Dense layer, reshaped to a map of side "
                                     "image_size / 2**len(g_channels).", lo=1)
    g_channels: tuple[int, ...] = opt((128, 128), "Filters of each of G's 2x upsampling layers, comma-separated "
                                                  "(the paper: 128,128; a lighter G: 128,64,32).", item=int)
    g_kernel: int = opt(4, "Kernel of G's transposed convolutions and of its output convolution.", lo=1)
    g_upsample: str = opt("transpose", "How G doubles resolution: 'transpose' (4x4 stride-2 transposed "
                                       "convolution, the paper's) or 'resize' (nearest-neighbour resize then a 3x3 "
                                       "convolution, free of checkerboard artefacts; computed as the equivalent "
                                       "transposed convolution, so at the same cost) or 'bilinear' (bilinear "
                                       "resize then a 3x3 convolution: a smooth input stays smooth; x2.25 the "
                                       "upsampling layers' multiply-adds).", choices=("transpose", "resize", "bilinear"))
    g_upsample_last: str = opt("", "The last doubling's kind when it differs from --g-upsample's (the one that "
                                    "draws the pixel scale; with --g-supersample, the extra layer): transpose, "
                                    "resize or bilinear; empty: as --g-upsample.",
                               choices=("", "transpose", "resize", "bilinear"))
    g_refine: int = opt(0, "A 3x3 convolution of this many channels (+ LeakyReLU) at full resolution between G's last "
                           "upsampling layer and its output convolution; 0: off.", lo=0)
    g_supersample: int = opt(0, "G draws at twice image_size and 2x2-averages down to it: one more upsampling layer "
                                "of this many channels (with its noise under --g-noise; --g-refine at the doubled size) "
                                "and the output convolution at the doubled size, then the tanh image average-pooled, "
                                "as a detector integrates over its pixels; D and every consumer still see image_size. "
                                "0: off.", lo=0)
    g_noise: bool = opt(False, "Per-pixel noise after each of G's upsampling layers, scaled by a learned strength per "
                               "channel (Karras et al. 2019), the noise derived from z by a fixed random projection "
                               "and a sine, so that the same latent gives the same image on every engine.")
    d_channels: tuple[int, ...] = opt((64, 128, 128, 256), "Filters of each 3x3 Conv2D in D, comma-separated.",
                                      item=int)
    d_strides: tuple[int, ...] = opt((1, 2, 2, 2), "Stride of each D convolution (the paper omits the first: 1).",
                                     item=int)
    d_kernel: int = opt(3, "Kernel of D's convolutions.", lo=1)
    d_dropout: float = opt(0.4, "Dropout rate before D's output layer.", lo=0.0, hi=1.0, hi_open=True)
    leaky_slope: float = opt(0.2, "LeakyReLU negative slope everywhere (Keras 3's default 0.3 is not the paper's).",
                             lo=0.0)
    d_mbstd: bool = opt(False, "Minibatch standard-deviation channel in D before Flatten (Karras et al. 2018).",
                        flag="mbstd")
    d_condition: str = opt("projection", "How a labelled run's D is told the class: projection (the inner product "
                                         "of a class embedding with D's features added to its logit, Miyato and "
                                         "Koyama 2018; measured better on every per-class metric, docs/results.md) "
                                         "or channels (one constant channel per class beside the image, Mirza and "
                                         "Osindero 2014). Unlabelled runs: no effect.",
                           choices=("channels", "projection"))
    d_highpass: int = opt(0, "A second head in D that sees only fine detail: the image minus its sigma-1 blur, "
                             "through 3x3 convolutions of this many channels (two stride-2) to a 1x1 convolution "
                             "whose patch logits are averaged and added to D's logit (a PatchGAN-style texture "
                             "judge); 0: off.", lo=0)
    d_patch: int = opt(0, "The same patch head on the full-resolution image itself (no high-pass filter): 3x3 "
                          "convolutions of this many channels (strides 1, 2, 2; each patch logit sees 9x9 pixels), "
                          "averaged and added to D's logit; 0: off.", lo=0)
    d_spectrum: int = opt(0, "A head in D on each image's log10 radially averaged power spectrum (32 bands, Hann "
                             "window): a Dense layer of this many units, LeakyReLU, one logit added to D's (a "
                             "spectral discriminator: per image, where --g-spectral matches the batch's mean); "
                             "0: off.", lo=0)
    d_spectrum_tile: int = opt(0, "The spectrum head's view: 0, the whole image's spectrum; T, each T x T tile's "
                                  "own (non-overlapping tiles, each mean-removed and Hann-windowed, T/2 radial "
                                  "bands) through the same head, the tiles' logits averaged: where in the image "
                                  "the detail is, not only how much of it there is. Needs --d-spectrum.", lo=0)

    # --- optimisation -----------------------------------------------------------------
    epochs: int = opt(15, "Epochs (the paper: 15).", lo=1)
    steps_per_epoch: int = opt(4000, "Steps per epoch (the paper: 4000).", lo=1)
    batch_size: int = opt(32, "Real images per step (D also sees as many generated ones); the global batch "
                              "under a distribution strategy.", lo=1, hi=4096)
    g_lr: float = opt(2e-4, "Generator Adam learning rate (DCGAN's 2e-4).", lo=0.0, lo_open=True)
    d_lr: float = opt(2e-4, "Discriminator Adam learning rate (2e-4); a higher D rate is the two time-scale "
                            "rule (TTUR).", lo=0.0, lo_open=True)
    beta_1: float = opt(0.5, "Adam beta_1 (DCGAN's 0.5).", lo=0.0, hi=1.0, hi_open=True)
    beta_2: float = opt(0.999, "Adam beta_2 (Keras' default).", lo=0.0, hi=1.0, hi_open=True)
    seed: int = opt(0, "Seed of weights, batches, latents and dropout; same seed + data = same run.",
                    lo=0, hi=2**31 - 1)
    # a run stores the resolved value, never "auto"
    precision: str = opt("auto", "Arithmetic of the training step. auto: bfloat16 mixed precision on CPUs with "
                                 "AVX-512 BF16 or AMX, else float32; float16 (mixed, loss-scaled) is for GPUs. "
                                 "Variables and outputs stay float32.", choices=PRECISIONS)
    shared_fake: bool = opt(False, "One generator forward pass per step: D's phase and G's phase use the same "
                                   "generated batch (G's gradient taken through D after D's update), instead of "
                                   "two passes on two latent batches.")

    # --- the paper's two named techniques -------------------------------------------
    progressive: bool = opt(True, "The study's progressive resizing of the real images.")
    # (fraction of all steps from which it applies, downscale factor): real images are
    # shrunk by the factor with area interpolation and brought back with bilinear
    # interpolation, so D sees coarse images first and full detail later.
    progressive_schedule: tuple[tuple[float, int], ...] = opt(
        ((0.0, 4), (0.15, 2), (0.3, 1)), "Progressive resizing stages as FRACTION:FACTOR pairs, comma-separated "
                                         "(0:4,0.15:2,0.3:1).", item=tuple)
    lr_schedule: str = opt("decay", "The study's adaptive learning rate: linear decay over the second half "
                                    "(decay) or constant.", choices=("decay", "constant"))
    lr_decay_start: float = opt(0.5, "Fraction of all steps after which both rates decay linearly.", lo=0.0, hi=1.0)
    lr_decay_final: float = opt(0.1, "Rate at the last step, as a fraction of the initial rate.", lo=0.0, hi=1.0,
                                lo_open=True)

    # --- data-efficient recipe (every lever off in 'paper'; docs/training.md) ----------
    augment: str = opt("off", "Differentiable augmentation of real and generated images before D, in both "
                              "phases (G learns through it): fixed probability (DiffAugment, Zhao et al. 2020) or "
                              "adaptive (ADA, Karras et al. 2020: the probability follows D's overfitting).",
                       choices=AUGMENT_MODES)
    augment_policy: tuple[str, ...] = opt(("color", "translation", "cutout"),
                                          "Augmentations, applied in this order, comma-separated.", item=str)
    augment_p: float = opt(1.0, "Fixed augmentation: the probability of each augmentation per image.", lo=0.0,
                           hi=1.0)
    ada_start: float = opt(0.0, "Adaptive: the probability at step 0 (Karras et al. 2020 start at 0 and let "
                                "the controller raise it).", lo=0.0, hi=1.0)
    ada_target: float = opt(0.6, "Adaptive: target of E[sign(D's logit on real images)] (ADA's r_t).",
                            lo=0.0, hi=1.0, lo_open=True, hi_open=True)
    ada_interval: int = opt(4, "Adaptive: steps between adjustments of the probability.", lo=1)
    ada_speed: float = opt(500.0, "Adaptive: steps for the probability to move by 1 when always off target.",
                           lo=0.0, lo_open=True)
    ada_signal: str = opt("train", "Adaptive: what drives p. train: ADA's r_t, the sign of D's logits on the real "
                                   "batch, against ada_target. validation: D's overfitting itself: ada_validation "
                                   "training images are withheld from D, and p rises while the share of them that D "
                                   "calls real trails the share of as many images it trains on (both augmented alike, "
                                   "D in inference mode) by more than ada_gap, and falls otherwise.",
                          choices=ADA_SIGNALS)
    ada_validation: int = opt(12, "Adaptive, signal validation: training images withheld from D (drawn from the seed; "
                                  "named in the log).", lo=1)
    ada_gap: float = opt(0.2, "Adaptive, signal validation: the target gap between D's share of real verdicts on "
                              "images it trains on and on the withheld ones.", lo=0.0, hi=1.0, hi_open=True)
    r1_gamma: float = opt(0.0, "R1 gradient penalty gamma/2 E|grad_x D_logit(x_real)|^2 on D (Mescheder et al. "
                               "2018); 0: off.", lo=0.0)
    lecam: float = opt(0.0, "Weight of the LeCam regularisation of D (Tseng et al. 2021, for GANs on little "
                            "data): lecam * (E[relu(D(x) - mean_fake)^2] + E[relu(mean_real - D(G(z)))^2]) on D's "
                            "logits, mean_real and mean_fake being exponential moving averages of D's mean logit on "
                            "real and on generated images over the steps before: D's verdicts are kept near their "
                            "own history instead of running apart as D memorises; 0: off.", lo=0.0)
    lecam_decay: float = opt(0.99, "Decay per step of the LeCam term's moving averages of D's logits.", lo=0.0,
                             hi=1.0, lo_open=True, hi_open=True)
    g_spectral: float = opt(0.0, "Weight of a spectrum term in G's loss: the mean squared difference between the "
                                 "log radially averaged power spectra of the generated and the real batch (Hann "
                                 "window, 32 radial bands); 0: off.", lo=0.0)
    g_detail: float = opt(0.0, "Weight of a fine-detail term in G's loss: the sliced Wasserstein distance between "
                               "the k x k patches of the fine detail (image minus its sigma-1 blur, over its RMS in "
                               "each image) of the generated and the real batch (32 random directions, 16,384 "
                               "random positions per step): the shape of each image's detail (sparse edges or "
                               "even grain), not its amount; 0: off.", lo=0.0)
    g_detail_patch: int = opt(5, "Side k of the fine-detail term's patches (1: the distribution of single "
                                 "fine-detail values).", lo=1, hi=15)
    label_smoothing: float = opt(0.0, "One-sided label smoothing: D's target for real images is 1 minus this "
                                      "(Salimans et al. 2016); 0: off.", lo=0.0, hi=0.5, hi_open=True)
    # The half-life in steps grows as ema_rampup * step up to ema_halflife (StyleGAN2-ADA's
    # ramp-up), so early weights fade out instead of dominating a short run.
    ema_halflife: float = opt(0.0, "Half-life in steps of the EMA of G's weights that samples, snapshots and "
                                   "export use (Karras et al. 2018); 0: off.", lo=0.0)
    ema_rampup: float = opt(0.05, "The EMA's half-life is at most this times the steps done (0: the full "
                                  "half-life from step 0).", lo=0.0)

    # --- evaluation, pictures, checkpoints ------------------------------------------
    eval_max_images: int = opt(512, "Real images (and as many generated) in the epoch-end metrics.", lo=2)
    grid_images: int = opt(16, "Generated images in each epoch's sample grid (fixed latents).", lo=1)
    checkpoint_every: int = opt(1, "Epochs between checkpoints (one is always written at the end).", lo=1)
    checkpoint_minutes: float = opt(10.0, "Also checkpoint inside an epoch once this many minutes have passed "
                                          "since the last checkpoint, so a machine that is taken away without a "
                                          "signal loses at most that much; 0: only at epoch ends.", lo=0.0)
    keep_checkpoints: int = opt(2, "Newest checkpoints kept on disk (older ones are deleted).", lo=1)
    deterministic: bool = opt(False, "Bitwise the same run again on the same machine (and a resumed run bitwise "
                                     "an uninterrupted one) at the real size: TensorFlow runs one op at a time "
                                     "(one inter-op thread; each op still uses every core) with op determinism "
                                     "on. Without it, runs of one seed agree to rounding at first and then drift "
                                     "apart (docs/training.md, \"Reproducibility\").")
    resize: str = opt("stretch", "How non-square images become square: stretch (the study) or centre-crop.",
                      choices=RESIZE_MODES)
    quality_images: int = opt(256, "Generated images scored against --heldout at each epoch end (recall, "
                                   "coverage, KID, diversity, audit flags); 0: off.", lo=0)
    snapshot_steps: tuple[int, ...] = opt((), "Also keep the sampling generator at these global steps (epoch "
                                              "ends), comma-separated, as snapshots/step-NNNNNNNNN/generator.keras.",
                                          item=int)

    @property
    def total_steps(self) -> int:
        return self.epochs * self.steps_per_epoch

    def validate(self) -> None:
        """Raise ValueError naming the first field that makes no sense: first every field's own
        range and choices, read from the same metadata that builds its cxr-train flag (opt), then
        the checks across fields."""
        self._check_fields()

        def need(cond: bool, msg: str) -> None:
            if not cond:
                raise ValueError(msg)

        n_up = len(self.g_channels)
        need(n_up >= 1, "g_channels needs at least one layer")
        need(self.image_size % (2**n_up) == 0, f"image_size must be divisible by {2**n_up}")
        need(len(self.d_channels) == len(self.d_strides) >= 1, "d_channels and d_strides need equal, non-zero length")
        need(all(c >= 1 for c in (*self.g_channels, *self.d_channels)), "widths must be >= 1")
        need(all(s >= 1 for s in self.d_strides), "d_strides must be >= 1")
        sched = self.progressive_schedule
        need(len(sched) >= 1 and sched[0][0] == 0.0, "progressive_schedule must start at fraction 0.0")
        need(all(a[0] < b[0] for a, b in zip(sched, sched[1:])), "progressive_schedule fractions must increase")
        need(sched[-1][1] == 1, "progressive_schedule must end at factor 1 (full resolution)")
        need(all(f >= 1 and self.image_size % f == 0 for _, f in sched),
             "progressive_schedule factors must divide image_size")
        need(len(self.augment_policy) >= 1 and set(self.augment_policy) <= set(AUGMENT_TRANSFORMS),
             f"augment_policy must name some of {', '.join(AUGMENT_TRANSFORMS)}")
        need(not self.d_spectrum_tile or (self.d_spectrum > 0 and self.d_spectrum_tile >= 4
                                          and self.image_size % self.d_spectrum_tile == 0),
             "d_spectrum_tile needs d_spectrum > 0, at least 4 pixels and to divide image_size")
        if self.ada_signal == "validation":
            need(self.augment == "adaptive", "ada_signal validation drives adaptive augmentation: it needs augment "
                                             "adaptive")
            need(not self.progressive, "ada_signal validation needs progressive off (D's input size would change "
                                       "under the withheld images)")
            need(not self.classes, "ada_signal validation is for unlabelled runs (a labelled D needs each withheld "
                                   "image's class, and the split would unbalance the classes)")
        need(self.quality_images == 0 or self.quality_images > 5, "quality_images must be 0 (off) or more than 5")
        need(len(self.classes) != 1 and len(set(self.classes)) == len(self.classes),
             "classes must be empty (unconditional) or at least two distinct names")
        need(not self.classes or self.batch_size % len(self.classes) == 0,
             f"batch_size must be a multiple of the {len(self.classes)} classes (every batch holds each class alike)")
        need(all(s > 0 and s % self.steps_per_epoch == 0 and s <= self.total_steps for s in self.snapshot_steps),
             f"snapshot_steps must be epoch ends (multiples of steps_per_epoch {self.steps_per_epoch}) "
             f"within the run's {self.total_steps} steps")

    def _check_fields(self) -> None:
        for f in dataclasses.fields(self):
            meta, value = f.metadata, getattr(self, f.name)
            choices = meta.get("choices")
            if choices is not None and value not in choices:
                raise ValueError(f"{f.name} must be one of {', '.join(map(str, choices))}, not {value!r}")
            lo, hi = meta.get("lo"), meta.get("hi")
            if lo is None and hi is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"{f.name} must be a number, not {value!r}")
            if lo is not None and (value <= lo if meta.get("lo_open") else value < lo):
                raise ValueError(f"{f.name} must be {'>' if meta.get('lo_open') else '>='} {lo}, not {value!r}")
            if hi is not None and (value >= hi if meta.get("hi_open") else value > hi):
                raise ValueError(f"{f.name} must be {'<' if meta.get('hi_open') else '<='} {hi}, not {value!r}")

    @property
    def ema(self) -> bool:
        return self.ema_halflife > 0

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    @property
    def input_dim(self) -> int:
        """G's input: the latent, then the one-hot class of a labelled run."""
        return self.latent_dim + len(self.classes)


    def replace(self, **changes) -> Config:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Config:
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = set(d) - set(known)
        if unknown:
            raise ValueError(f"unknown config fields: {sorted(unknown)}")
        kw = {"precision": "float32"}  # configs written before the field existed trained in float32
        if d.get("classes") and "d_condition" not in d:  # labelled runs before the field: class channels
            kw["d_condition"] = "channels"
        if d.get("augment") == "adaptive" and "ada_start" not in d:  # before ada_start, ADA started at augment_p
            kw["ada_start"] = d.get("augment_p", 1.0)
        for k, v in d.items():
            if isinstance(v, list):  # JSON has no tuples
                v = tuple(tuple(x) if isinstance(x, list) else x for x in v)
            kw[k] = v
        return cls(**kw)

    def hash(self) -> str:
        """Short content hash of the resolved config (provenance of exported models). Fields that
        cannot change what is trained (UNHASHED) are left out, so a run started before one of
        them existed keeps its hash; so are the labelled-only fields of an unlabelled run
        (UNLABELLED_NO_EFFECT), so that their defaults can change without touching its hash, and the
        fields of HASHED_WHEN_SET while off."""
        skip = UNHASHED | (UNLABELLED_NO_EFFECT if not self.classes else frozenset())
        skip |= {f.name for f in dataclasses.fields(self)
                 if f.name in HASHED_WHEN_SET and getattr(self, f.name) == f.default}
        blob = json.dumps({k: v for k, v in self.to_dict().items() if k not in skip}, sort_keys=True).encode("utf-8")
        return hashlib.sha256(blob).hexdigest()[:16]


# The data-efficient levers (docs/training.md): DiffAugment before D, a warmed-up EMA of G for
# sampling, and neither of the study's schedules (its progressive resizing and learning-rate decay).
RECIPE = dict(progressive=False, lr_schedule="constant", augment="fixed", ema_halflife=300.0, ema_rampup=0.05)
# The cheaper step (docs/benchmarks.md, "The cheaper step"): G from a 16x16x256 map through
# 128 -> 64 -> 32 channels with resize convolutions (7.0 M parameters, no checkerboard), D at half
# the study's widths in its first three layers, and one G forward pass per step.
LIGHT = dict(g_channels=(128, 64, 32), g_upsample="resize", d_channels=(32, 64, 128, 256), shared_fake=True)

# What both recipe presets change from RECIPE: adaptive augmentation (ADA, its r_t signal) in place of
# DiffAugment's fixed probability, since 2026-12-07: at 6,000 steps it lowered the texture test's AUC
# on three seeds out of three with KID, coverage, recall and the audit holding (docs/results.md,
# "Adaptive augmentation against the D that memorises"); its probability stays under 0.01 for the
# first 1,000 steps, so `quick` is hardly touched by it. Augmentation was off from 2026-12-03 to
# 2026-12-07 (the ablation at 1,000 steps and the runs to 3,000: docs/results.md, "One lever at a
# time" and "Augmentation off at length"); --augment off trains those presets again. And a 3x3
# refinement convolution of 32 channels at full resolution in G, the one texture lever that moved
# the fine-detail statistics on three seeds with KID, recall and coverage holding (docs/results.md,
# "The refinement layer on three seeds and at length"; since 2026-12-06: runs of the presets
# recorded before it have g_refine 0, and --g-refine 0 trains them again).
CHOSEN = dict(augment="adaptive", g_refine=32)

PRESETS: dict[str, Config] = {
    # The study: 15 epochs x 4000 steps. Batch 32 (the paper is silent): 138 images give
    # about 4 batches a pass, and it is the size our reference measurements use; larger
    # batches are an option on GPUs. None of the recipe's levers.
    "paper": Config(preset="paper"),
    # The recipe on the cheaper step with adaptive augmentation and G's refinement convolution, 1,000
    # steps (10 x 100, batch 32): the README's default; the first 1,000 steps of `long` (the same
    # config and draws). Why these levers: docs/results.md.
    "quick": Config(preset="quick", epochs=10, steps_per_epoch=100, batch_size=32, keep_checkpoints=1,
                    **{**RECIPE, **CHOSEN}, **LIGHT),
    # The same recipe for 6,000 steps (60 x 100; 3,000 until 2026-12-07: ADA's gain in texture shows
    # between 3,000 and 6,000 steps, docs/results.md).
    "long": Config(preset="long", epochs=60, steps_per_epoch=100, batch_size=32, keep_checkpoints=1,
                   **{**RECIPE, **CHOSEN}, **LIGHT),
    # Tiny widths and 32x32 images: seconds, for tests and a first look at the plumbing;
    # float32 so that it computes the same on every machine. The paper's recipe.
    "smoke": Config(
        preset="smoke", image_size=32, latent_dim=16, g_dense_channels=16, g_channels=(8, 8),
        d_channels=(8, 8, 8, 8), epochs=2, steps_per_epoch=3, batch_size=4,
        eval_max_images=16, grid_images=4, keep_checkpoints=1, precision="float32", quality_images=16,
    ),
}


def preset(name: str) -> Config:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose from {sorted(PRESETS)}") from None
