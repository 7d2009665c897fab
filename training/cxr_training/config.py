"""Training configuration: one frozen dataclass and its named presets.

The CLI only overrides fields of a preset; the resolved config is written to the run
folder before step 0 and is the single source of truth when a run is resumed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass


@dataclass(frozen=True)
class Config:
    # --- identity -------------------------------------------------------------------
    preset: str = "paper"  # the preset this config started from (run folder suffix)

    # --- architecture (the paper's by default; see docs/architecture.md) -------------
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

    # --- evaluation, pictures, checkpoints ------------------------------------------
    eval_max_images: int = 512  # real images (and as many generated) in the epoch-end metrics
    grid_images: int = 16  # generated images in each epoch's sample grid (fixed latents)
    checkpoint_every: int = 1  # epochs between checkpoints (one is always written at the end)
    keep_checkpoints: int = 2  # newest checkpoints kept on disk (older ones are deleted)
    resize: str = "stretch"  # "stretch" (the paper's plain resize) or "crop" (centre square first)

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
        need(self.resize in ("stretch", "crop"), "resize must be 'stretch' or 'crop'")
        need(self.precision in ("auto", "float32", "bfloat16", "float16"),
             "precision must be auto, float32, bfloat16 or float16")

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


PRESETS: dict[str, Config] = {
    # The study: 15 epochs x 4000 steps. Batch 32 (the paper is silent): 138 images give
    # about 4 batches a pass, it is the size our reference measurements use, and it keeps
    # one step near 5 s on 2 CPU cores; larger batches are an option on GPUs.
    "paper": Config(preset="paper"),
    # The paper's architecture for 300 steps (6 x 50, batch 32): 8-13 minutes on 2 CPU
    # cores, enough for ribs, lung fields and mediastinum to appear (PAPER.md).
    "quick": Config(preset="quick", epochs=6, steps_per_epoch=50, batch_size=32, keep_checkpoints=1),
    # Tiny widths and 32x32 images: seconds, for tests and a first look at the plumbing;
    # float32 so that it computes the same on every machine.
    "smoke": Config(
        preset="smoke", image_size=32, latent_dim=16, g_dense_channels=16, g_channels=(8, 8),
        d_channels=(8, 8, 8, 8), epochs=2, steps_per_epoch=3, batch_size=4,
        eval_max_images=16, grid_images=4, keep_checkpoints=1, precision="float32",
    ),
}


def preset(name: str) -> Config:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose from {sorted(PRESETS)}") from None
