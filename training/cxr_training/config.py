"""Training configuration: one frozen dataclass and its named presets.

The CLI only overrides fields of a preset; the resolved config is written to the run
folder before step 0 and is the single source of truth when a run is resumed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass

from cxr_runtime.choices import RESIZE_MODES
from cxr_training.precision import CHOICES as PRECISIONS

AUGMENT_MODES = ("off", "fixed", "adaptive")
AUGMENT_TRANSFORMS = ("color", "translation", "cutout")


@dataclass(frozen=True)
class Config:
    # --- identity -------------------------------------------------------------------
    preset: str = "paper"  # the preset this config started from (run folder suffix)

    # --- architecture (the paper's by default; see docs/training.md) ------------------
    image_size: int = 128  # output is image_size x image_size x 1
    latent_dim: int = 100  # length of the noise vector z
    g_dense_channels: int = 256  # channels of the Dense layer's reshaped map (size image_size / 2**len(g_channels))
    g_channels: tuple[int, ...] = (128, 128)  # filters of each 4x4 stride-2 Conv2DTranspose
    g_kernel: int = 4  # kernel of the transposed convolutions and of the output convolution
    d_channels: tuple[int, ...] = (64, 128, 128, 256)  # filters of each 3x3 Conv2D in D
    d_strides: tuple[int, ...] = (1, 2, 2, 2)  # stride of each D convolution (the paper omits the first: 1)
    d_kernel: int = 3  # kernel of D's convolutions
    d_dropout: float = 0.4  # dropout rate before D's output layer
    leaky_slope: float = 0.2  # LeakyReLU negative slope everywhere (Keras 3's default 0.3 is not the paper's)
    d_mbstd: bool = False  # D appends a minibatch standard-deviation channel before Flatten (Karras et al. 2018)

    # --- optimisation -----------------------------------------------------------------
    epochs: int = 15  # the paper's 15 epochs
    steps_per_epoch: int = 4000  # the paper's "4000 steps per epoch"
    batch_size: int = 32  # real images per D step (D also sees as many generated); paper silent
    g_lr: float = 2e-4  # generator Adam learning rate (DCGAN's)
    d_lr: float = 2e-4  # discriminator Adam learning rate
    beta_1: float = 0.5  # Adam beta_1 (DCGAN's)
    beta_2: float = 0.999  # Adam beta_2 (Keras default)
    seed: int = 0  # seeds weights, batches, latents and dropout; same seed + data = same run
    # "auto", "float32", "bfloat16" or "float16" (Keras mixed precision, see precision.py);
    # a run stores the resolved value, never "auto"
    precision: str = "auto"

    # --- the paper's two named techniques -------------------------------------------
    progressive: bool = True  # progressive resizing of the real images
    # (fraction of all steps from which it applies, downscale factor): real images are
    # shrunk by the factor with area interpolation and brought back with bilinear
    # interpolation, so D sees coarse images first and full detail later.
    progressive_schedule: tuple[tuple[float, int], ...] = ((0.0, 4), (0.15, 2), (0.3, 1))
    lr_schedule: str = "decay"  # "decay" or "constant": the adaptive learning rate
    lr_decay_start: float = 0.5  # fraction of all steps after which both rates decay linearly
    lr_decay_final: float = 0.1  # rate at the last step, as a fraction of the initial rate

    # --- data-efficient recipe (every lever off in 'paper'; docs/training.md) ----------
    # Augmentation of everything D sees, real and generated, in both phases of the step,
    # differentiable so G learns through it (DiffAugment, Zhao et al. 2020):
    # "off", "fixed" (probability augment_p per image and transform) or "adaptive" (ADA,
    # Karras et al. 2020: the probability follows D's overfitting, starting at augment_p).
    augment: str = "off"
    augment_policy: tuple[str, ...] = ("color", "translation", "cutout")  # applied in this order
    augment_p: float = 1.0  # fixed: the probability; adaptive: the starting probability
    ada_target: float = 0.6  # adaptive: target of E[sign(D's real logit)] (ADA's r_t)
    ada_interval: int = 4  # adaptive: steps between adjustments of the probability
    ada_speed: float = 500.0  # adaptive: steps for the probability to move by 1 when always off target
    r1_gamma: float = 0.0  # R1 penalty gamma/2 E|grad_x D_logit(x_real)|^2 on D (Mescheder et al. 2018); 0 = off
    label_smoothing: float = 0.0  # one-sided: D's target for real images is 1 - this (Salimans et al. 2016)
    # EMA of G's weights, used for samples, snapshots and export (Karras et al. 2018). The
    # half-life in steps grows as ema_rampup * step up to ema_halflife (StyleGAN2-ADA's ramp-up),
    # so early weights fade out instead of dominating a short run. 0 = off.
    ema_halflife: float = 0.0
    ema_rampup: float = 0.05  # 0: the full half-life from step 0

    # --- evaluation, pictures, checkpoints ------------------------------------------
    eval_max_images: int = 512  # real images (and as many generated) in the epoch-end metrics
    grid_images: int = 16  # generated images in each epoch's sample grid (fixed latents)
    checkpoint_every: int = 1  # epochs between checkpoints (one is always written at the end)
    keep_checkpoints: int = 2  # newest checkpoints kept on disk (older ones are deleted)
    resize: str = "stretch"  # "stretch" (the paper's plain resize) or "crop" (centre square first)
    # generated images scored at each epoch end against the held-out folder (--heldout):
    # recall, coverage, KID, diversity, audit flags; 0 = off
    quality_images: int = 256
    # global steps (epoch ends) at which the sampling generator is also kept as
    # snapshots/step-NNNNNNNNN/generator.keras, for export or comparison later
    snapshot_steps: tuple[int, ...] = ()

    @property
    def total_steps(self) -> int:
        return self.epochs * self.steps_per_epoch

    def validate(self) -> None:
        """Raise ValueError naming the first field that makes no sense."""
        def need(cond: bool, msg: str) -> None:
            if not cond:
                raise ValueError(msg)

        n_up = len(self.g_channels)
        need(n_up >= 1, "g_channels needs at least one layer")
        need(self.image_size >= 8 and self.image_size % (2**n_up) == 0,
             f"image_size must be >= 8 and divisible by {2**n_up}")
        need(self.latent_dim >= 1, "latent_dim must be >= 1")
        need(len(self.d_channels) == len(self.d_strides) >= 1, "d_channels and d_strides need equal, non-zero length")
        need(all(c >= 1 for c in (*self.g_channels, *self.d_channels, self.g_dense_channels)), "widths must be >= 1")
        need(0.0 <= self.d_dropout < 1.0, "d_dropout must be in [0, 1)")
        need(self.leaky_slope >= 0.0, "leaky_slope must be >= 0")
        need(self.epochs >= 1, "epochs must be >= 1")
        need(self.steps_per_epoch >= 1, "steps_per_epoch must be >= 1")
        need(self.batch_size >= 1, "batch_size must be >= 1")
        need(self.g_lr > 0 and self.d_lr > 0, "learning rates must be > 0")
        need(0.0 <= self.beta_1 < 1.0 and 0.0 <= self.beta_2 < 1.0, "Adam betas must be in [0, 1)")
        need(self.lr_schedule in ("decay", "constant"), "lr_schedule must be 'decay' or 'constant'")
        need(0.0 <= self.lr_decay_start <= 1.0, "lr_decay_start must be in [0, 1]")
        need(0.0 < self.lr_decay_final <= 1.0, "lr_decay_final must be in (0, 1]")
        sched = self.progressive_schedule
        need(len(sched) >= 1 and sched[0][0] == 0.0, "progressive_schedule must start at fraction 0.0")
        need(all(a[0] < b[0] for a, b in zip(sched, sched[1:])), "progressive_schedule fractions must increase")
        need(sched[-1][1] == 1, "progressive_schedule must end at factor 1 (full resolution)")
        need(all(f >= 1 and self.image_size % f == 0 for _, f in sched),
             "progressive_schedule factors must divide image_size")
        need(self.eval_max_images >= 2, "eval_max_images must be >= 2")
        need(self.grid_images >= 1, "grid_images must be >= 1")
        need(self.checkpoint_every >= 1, "checkpoint_every must be >= 1")
        need(self.keep_checkpoints >= 1, "keep_checkpoints must be >= 1")
        need(self.resize in RESIZE_MODES, f"resize must be one of {', '.join(RESIZE_MODES)}")
        need(self.precision in PRECISIONS, f"precision must be one of {', '.join(PRECISIONS)}")
        need(self.augment in AUGMENT_MODES, f"augment must be one of {', '.join(AUGMENT_MODES)}")
        need(len(self.augment_policy) >= 1 and set(self.augment_policy) <= set(AUGMENT_TRANSFORMS),
             f"augment_policy must name some of {', '.join(AUGMENT_TRANSFORMS)}")
        need(0.0 <= self.augment_p <= 1.0, "augment_p must be in [0, 1]")
        need(0.0 < self.ada_target < 1.0, "ada_target must be in (0, 1)")
        need(self.ada_interval >= 1, "ada_interval must be >= 1")
        need(self.ada_speed > 0, "ada_speed must be > 0")
        need(self.r1_gamma >= 0.0, "r1_gamma must be >= 0")
        need(0.0 <= self.label_smoothing < 0.5, "label_smoothing must be in [0, 0.5)")
        need(self.ema_halflife >= 0.0, "ema_halflife must be >= 0")
        need(self.ema_rampup >= 0.0, "ema_rampup must be >= 0")
        need(self.quality_images == 0 or self.quality_images > 5, "quality_images must be 0 (off) or more than 5")
        need(all(s > 0 and s % self.steps_per_epoch == 0 and s <= self.total_steps for s in self.snapshot_steps),
             f"snapshot_steps must be epoch ends (multiples of steps_per_epoch {self.steps_per_epoch}) "
             f"within the run's {self.total_steps} steps")

    @property
    def ema(self) -> bool:
        return self.ema_halflife > 0

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
        for k, v in d.items():
            if isinstance(v, list):  # JSON has no tuples
                v = tuple(tuple(x) if isinstance(x, list) else x for x in v)
            kw[k] = v
        return cls(**kw)

    def hash(self) -> str:
        """Short content hash of the resolved config (provenance of exported models)."""
        blob = json.dumps(self.to_dict(), sort_keys=True).encode("utf-8")
        return hashlib.sha256(blob).hexdigest()[:16]


# The data-efficient recipe of 'quick' and 'long' (chosen by the ablation in docs/results.md):
# the paper's networks, DiffAugment before D, a warmed-up EMA of G for sampling, and neither
# of the paper's schedules (its progressive resizing and learning-rate decay).
RECIPE = dict(progressive=False, lr_schedule="constant", augment="fixed", ema_halflife=300.0, ema_rampup=0.05)

PRESETS: dict[str, Config] = {
    # The study: 15 epochs x 4000 steps. Batch 32 (the paper is silent): 138 images give
    # about 4 batches a pass, and it is the size our reference measurements use; larger
    # batches are an option on GPUs. None of the recipe's levers.
    "paper": Config(preset="paper"),
    # The recipe for 300 steps (6 x 50, batch 32): the README's default, 8-13 minutes of
    # training on the 2-core reference machine (docs/training.md has the costs).
    "quick": Config(preset="quick", epochs=6, steps_per_epoch=50, batch_size=32, keep_checkpoints=1, **RECIPE),
    # The recipe for 2,000 steps (20 x 100): about an hour on the reference machine.
    "long": Config(preset="long", epochs=20, steps_per_epoch=100, batch_size=32, keep_checkpoints=1, **RECIPE),
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
