"""The paper's generator and discriminator as pure builders (no I/O, no printing).

With the `paper` config they are exactly the study's networks: 27,265,281 and
582,785 parameters. Smaller configs build the same topology at toy widths for tests.
"""

from __future__ import annotations

from cxr_training.config import Config
from cxr_training.tfenv import import_tf

_, keras = import_tf()
layers = keras.layers


def build_generator(cfg: Config) -> keras.Model:
    """z (latent_dim,) -> image (size, size, 1) in [-1, 1] (tanh)."""
    base = cfg.image_size // 2 ** len(cfg.g_channels)
    z = keras.Input(shape=(cfg.latent_dim,), name="z")
    x = layers.Dense(base * base * cfg.g_dense_channels, name="g_dense")(z)
    x = layers.LeakyReLU(negative_slope=cfg.leaky_slope, name="g_dense_lrelu")(x)
    x = layers.Reshape((base, base, cfg.g_dense_channels), name="g_reshape")(x)
    for i, ch in enumerate(cfg.g_channels, start=1):
        x = layers.Conv2DTranspose(ch, cfg.g_kernel, strides=2, padding="same", name=f"g_up{i}")(x)
        x = layers.LeakyReLU(negative_slope=cfg.leaky_slope, name=f"g_up{i}_lrelu")(x)
    image = layers.Conv2D(1, cfg.g_kernel, padding="same", activation="tanh", name="g_out")(x)
    return keras.Model(z, image, name="generator")


def build_discriminator(cfg: Config) -> keras.Model:
    """image (size, size, 1) -> probability that it is real (sigmoid)."""
    image = keras.Input(shape=(cfg.image_size, cfg.image_size, 1), name="image")
    x = image
    for i, (ch, stride) in enumerate(zip(cfg.d_channels, cfg.d_strides), start=1):
        x = layers.Conv2D(ch, cfg.d_kernel, strides=stride, padding="same", name=f"d_conv{i}")(x)
        x = layers.LeakyReLU(negative_slope=cfg.leaky_slope, name=f"d_conv{i}_lrelu")(x)
    x = layers.Flatten(name="d_flatten")(x)
    x = layers.Dropout(cfg.d_dropout, seed=cfg.seed, name="d_dropout")(x)
    p = layers.Dense(1, activation="sigmoid", name="d_out")(x)
    return keras.Model(image, p, name="discriminator")
