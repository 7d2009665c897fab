"""The paper's generator and discriminator as pure builders (no I/O, no printing).

With the `paper` config they are exactly the study's networks: 27,265,281 and
582,785 parameters. Smaller configs build the same topology at toy widths for tests.
"""

from __future__ import annotations

from cxr_training.config import Config
from cxr_training.precision import policy_name
from cxr_training.tfenv import import_tf

_, keras = import_tf()
layers = keras.layers


def _dtype(precision: str | None) -> str | None:
    """Keras dtype policy of the hidden layers (None: Keras' float32 default)."""
    if precision in (None, "auto", "float32"):
        return None
    return policy_name(precision)


def build_generator(cfg: Config, precision: str | None = None) -> keras.Model:
    """z (latent_dim,) -> image (size, size, 1) in [-1, 1] (tanh).

    `precision` (default: cfg.precision; "auto" builds float32) sets the layers' dtype
    policy; under mixed precision the tanh and the image are float32 (an extra weightless
    `g_out_tanh` layer), so both variants hold the same weights in the same order.
    """
    dt = _dtype(cfg.precision if precision is None else precision)
    base = cfg.image_size // 2 ** len(cfg.g_channels)
    z = keras.Input(shape=(cfg.latent_dim,), name="z")
    x = layers.Dense(base * base * cfg.g_dense_channels, name="g_dense", dtype=dt)(z)
    x = layers.LeakyReLU(negative_slope=cfg.leaky_slope, name="g_dense_lrelu", dtype=dt)(x)
    x = layers.Reshape((base, base, cfg.g_dense_channels), name="g_reshape", dtype=dt)(x)
    for i, ch in enumerate(cfg.g_channels, start=1):
        x = layers.Conv2DTranspose(ch, cfg.g_kernel, strides=2, padding="same", name=f"g_up{i}", dtype=dt)(x)
        x = layers.LeakyReLU(negative_slope=cfg.leaky_slope, name=f"g_up{i}_lrelu", dtype=dt)(x)
    if dt is None:
        image = layers.Conv2D(1, cfg.g_kernel, padding="same", activation="tanh", name="g_out")(x)
    else:
        # the output convolution in the mixed policy (D rounds its input to that precision
        # anyway); tanh and the image in float32. Same weights as the float32 network.
        x = layers.Conv2D(1, cfg.g_kernel, padding="same", name="g_out", dtype=dt)(x)
        image = layers.Activation("tanh", name="g_out_tanh", dtype="float32")(x)
    return keras.Model(z, image, name="generator")


def build_discriminator(cfg: Config, precision: str | None = None) -> keras.Model:
    """image (size, size, 1) -> probability that it is real (sigmoid); the output layer
    always computes in float32 (see build_generator for `precision`)."""
    dt = _dtype(cfg.precision if precision is None else precision)
    image = keras.Input(shape=(cfg.image_size, cfg.image_size, 1), name="image")
    x = image
    for i, (ch, stride) in enumerate(zip(cfg.d_channels, cfg.d_strides), start=1):
        x = layers.Conv2D(ch, cfg.d_kernel, strides=stride, padding="same", name=f"d_conv{i}", dtype=dt)(x)
        x = layers.LeakyReLU(negative_slope=cfg.leaky_slope, name=f"d_conv{i}_lrelu", dtype=dt)(x)
    x = layers.Flatten(name="d_flatten", dtype=dt)(x)
    x = layers.Dropout(cfg.d_dropout, seed=cfg.seed, name="d_dropout", dtype=dt)(x)
    p = layers.Dense(1, activation="sigmoid", name="d_out", dtype="float32")(x)
    return keras.Model(image, p, name="discriminator")
