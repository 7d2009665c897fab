"""Differentiable augmentation of everything the discriminator sees.

With 138 training images D soon memorises them, its gradients stop telling G anything
useful, and the samples degrade. DiffAugment (Zhao et al. 2020, "Differentiable
Augmentation for Data-Efficient GAN Training") augments real *and* generated images, in
D's phase and in G's phase alike, with transforms that are differentiable, so G learns
through them; because both sides are transformed the same way, G is not pushed to produce
augmented-looking images. ADA (Karras et al. 2020, "Training Generative Adversarial
Networks with Limited Data") applies each transform to an image with a probability p and
adjusts p by how much D overfits; gan.py holds p and its controller.

Transforms, on the [-1, 1] scale, in `Config.augment_policy` order:
- color: brightness + U(-0.5, 0.5), then contrast: mean + (x - mean) * U(0.5, 1.5) (per image);
- translation: a shift by whole pixels of up to 1/8 of the side in each axis; pixels shifted
  in from outside are 0 (mid-grey);
- cutout: a square of half the side, centred anywhere on the image, set to 0.
Each image gets each transform with probability p, drawn independently.

Randomness is stateless, keyed by (seed, global step, slot): the same step draws the same
transforms whether the run was resumed, distributed or not. Parameters are drawn for the
whole global batch and each replica takes its rows, as with the latents.
"""

from __future__ import annotations

from cxr_training.tfenv import import_tf

tf, keras = import_tf()

TRANSLATION = 0.125  # largest shift, as a fraction of the side
CUTOUT = 0.5  # side of the cutout square, as a fraction of the image's side
# Slots: which images of a step a draw is for (keys must differ, or the real and the
# generated batch would get identical transforms).
SLOT_D_REAL, SLOT_D_FAKE, SLOT_G_FAKE = 0, 1, 2
SLOT_VALIDATION = 3  # ADA's validation signal: the probe and the withheld images (gan.py)
_KEY_OFFSET = 2**31  # keeps augmentation keys apart from the latent and batch keys (seed < 2**31)


def key(seed, step, slot: int):
    """int64 [2] stateless seed of one slot of one global step."""
    return tf.stack([tf.cast(seed, tf.int64) + _KEY_OFFSET, tf.cast(step, tf.int64) * 4 + slot])


def _uniform(k, j: int, batch: int, start, rows, lo=0.0, hi=1.0):
    """Uniform draws for rows [start, start + rows) of a global batch (sub-stream j of key k)."""
    u = tf.random.stateless_uniform([batch], seed=tf.random.experimental.stateless_fold_in(k, j),
                                    minval=lo, maxval=hi)
    return u[start : start + rows]


def _color(x, k, batch, start, rows):
    brightness = _uniform(k, 10, batch, start, rows, -0.5, 0.5)
    contrast = _uniform(k, 11, batch, start, rows, 0.5, 1.5)
    x = x + brightness[:, None, None, None]
    mean = tf.reduce_mean(x, axis=[1, 2, 3], keepdims=True)
    return mean + (x - mean) * contrast[:, None, None, None]


def _shift_rows(x, shift, size):
    """out[b, i] = x[b, i - shift[b]] where that exists, else 0 (along axis 1)."""
    src = tf.range(size)[None, :] - shift[:, None]
    inside = tf.cast((src >= 0) & (src < size), x.dtype)
    out = tf.gather(x, tf.clip_by_value(src, 0, size - 1), axis=1, batch_dims=1)
    return out * inside[:, :, None, None]


def _translation(x, k, batch, start, rows):
    size = x.shape[1]
    limit = int(size * TRANSLATION)
    # integers in [-limit, limit]: floor of a uniform over [-limit, limit + 1)
    dy = tf.cast(tf.floor(_uniform(k, 20, batch, start, rows, -limit, limit + 1)), tf.int32)
    dx = tf.cast(tf.floor(_uniform(k, 21, batch, start, rows, -limit, limit + 1)), tf.int32)
    x = _shift_rows(x, dy, size)
    x = tf.transpose(_shift_rows(tf.transpose(x, [0, 2, 1, 3]), dx, size), [0, 2, 1, 3])
    return x


def _cutout(x, k, batch, start, rows):
    size = x.shape[1]
    half = int(size * CUTOUT) // 2
    cy = tf.cast(tf.floor(_uniform(k, 30, batch, start, rows, 0, size)), tf.int32)
    cx = tf.cast(tf.floor(_uniform(k, 31, batch, start, rows, 0, size)), tf.int32)
    r = tf.range(size)[None, :]
    in_y = (r >= cy[:, None] - half) & (r < cy[:, None] + half)  # [rows, size]
    in_x = (r >= cx[:, None] - half) & (r < cx[:, None] + half)
    hole = in_y[:, :, None] & in_x[:, None, :]
    return x * tf.cast(~hole, x.dtype)[..., None]


TRANSFORMS = {"color": _color, "translation": _translation, "cutout": _cutout}


def augment(x, k, p, policy, batch: int, start=0):
    """Augment images x [rows, S, S, 1] (rows [start, start + rows) of a global batch of
    `batch`) with the transforms in `policy`, each applied to an image with probability p.

    Differentiable with respect to x; p = 1 always applies every transform, p = 0 returns x.
    """
    rows = tf.shape(x)[0]
    p = tf.cast(p, tf.float32)
    for j, name in enumerate(policy):
        apply = _uniform(k, 100 + j, batch, start, rows) < p
        y = TRANSFORMS[name](x, k, batch, start, rows)
        x = tf.where(apply[:, None, None, None], y, x)
    return x
