"""The paper's generator and discriminator as pure builders (no I/O, no printing).

With the `paper` config they are exactly the study's networks: 27,265,281 and
582,785 parameters. Other configs build the same topology at other widths and depths (a
lighter generator, toy widths for tests), optionally with resize-convolution upsampling.
"""

from __future__ import annotations

import numpy as np

from cxr_training.config import Config
from cxr_training.precision import policy_name
from cxr_training.tfenv import import_tf

_, keras = import_tf()
layers = keras.layers

LOGIT_LAYER = "d_out"  # D's last Dense layer: its output is the logit, before the sigmoid


def _dtype(precision: str | None) -> str | None:
    """Keras dtype policy of the hidden layers (None: Keras' float32 default)."""
    if precision in (None, "auto", "float32"):
        return None
    return policy_name(precision)


# Rows (or columns) of the 4-tap transposed kernel made of a 3x3 kernel's taps 0, 1, 2 by a
# nearest-neighbour 2x upsampling in front of it: with Keras' "same" 4x4 stride-2 transposed
# convolution, output 2m reads input m-1 with tap 3 and m with tap 1, output 2m+1 reads m with
# tap 2 and m+1 with tap 0; the upsampled 3x3 convolution reads, for 2m, inputs m-1 (w0) and
# m (w1 + w2), for 2m+1, m (w0 + w1) and m+1 (w2).
RESIZE_TAPS = ((0, 0, 1), (0, 1, 1), (1, 1, 0), (1, 0, 0))


def resize_conv_as_transposed(kernel3):
    """The (4, 4, out, in) Conv2DTranspose kernel equal to nearest 2x upsampling followed by a
    3x3 "same" convolution with `kernel3` (3, 3, in, out); numpy or a backend tensor."""
    taps = keras.ops.convert_to_tensor(RESIZE_TAPS, dtype=kernel3.dtype)
    return keras.ops.einsum("ap,bq,pqio->aboi", taps, taps, kernel3)


class _Conv2x(layers.Layer):
    """A 2x upsampling layer whose trained weights are one 3x3 kernel (in, filters) and a bias;
    subclasses say how the upsampling and the convolution are computed (`call`)."""

    def __init__(self, filters: int, **kwargs):
        super().__init__(**kwargs)
        self.filters = int(filters)

    def build(self, input_shape):
        cin = int(input_shape[-1])
        self.kernel = self.add_weight(name="kernel", shape=(3, 3, cin, self.filters),
                                      initializer="glorot_uniform")
        self.bias = self.add_weight(name="bias", shape=(self.filters,), initializer="zeros")

    def compute_output_shape(self, input_shape):
        b, h, w, _ = input_shape
        return (b, None if h is None else 2 * h, None if w is None else 2 * w, self.filters)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters}


@keras.saving.register_keras_serializable(package="cxr")
class ResizeConv2x(_Conv2x):
    """Nearest-neighbour 2x upsampling, then a 3x3 "same" convolution (Odena et al. 2016,
    "Deconvolution and Checkerboard Artifacts"): all four output phases answer a flat input
    alike, so the stride-2 transposed convolution's checkerboard cannot arise.

    Computed as the one 4x4 stride-2 transposed convolution it equals (RESIZE_TAPS), which does
    4 multiply-adds per output pixel and channel pair where the upsampled 3x3 convolution does
    9; the trained weight is the 3x3 kernel."""

    def call(self, x):
        kernel = resize_conv_as_transposed(keras.ops.cast(self.kernel, self.compute_dtype))
        y = keras.ops.conv_transpose(x, kernel, strides=2, padding="same")
        return y + keras.ops.cast(self.bias, self.compute_dtype)


# Bilinear 2x upsampling (half-pixel centres, edges clamped) followed by a 3x3 convolution, per
# axis: output 2m + a reads the coarse inputs m-1, m, m+1 (rows i = 0, 1, 2) with these weights on
# the 3x3 kernel's taps d = 0, 1, 2 (columns). From u[2m] = x[m-1]/4 + 3x[m]/4, u[2m+1] = 3x[m]/4 +
# x[m+1]/4 and y[n] = sum_d k[d] u[n + d - 1]; the convolution's own border is the upsampling of the
# edge-clamped input (not zeros), so the layer is a 3x3 convolution of the edge-padded coarse input
# per output phase.
BILINEAR_TAPS = np.array([[[0.75, 0.25, 0.0], [0.25, 0.75, 0.75], [0.0, 0.0, 0.25]],
                          [[0.25, 0.0, 0.0], [0.75, 0.75, 0.25], [0.0, 0.25, 0.75]]], np.float32)


def bilinear_conv_phases(kernel3):
    """(2, 2, 3, 3, in, out) kernels, one per output phase (row a, column b), of bilinear 2x
    upsampling followed by a 3x3 convolution with `kernel3` (3, 3, in, out), each applied to the
    input padded by one edge-replicated pixel; numpy or a backend tensor."""
    taps = keras.ops.convert_to_tensor(BILINEAR_TAPS, dtype=kernel3.dtype)
    return keras.ops.einsum("aip,bjq,pqco->abijco", taps, taps, kernel3)


@keras.saving.register_keras_serializable(package="cxr")
class BilinearConv2x(_Conv2x):
    """Bilinear 2x upsampling (half-pixel centres, as tf.image.resize) then a 3x3 convolution:
    no output phase is favoured, and a smooth input stays smooth (a nearest-neighbour doubling
    leaves each 2x2 block's four pixels equal for the convolution to undo). Computed on the coarse
    grid as one 3x3 convolution of the edge-padded input with 4 x filters outputs (one per output
    phase, `bilinear_conv_phases`) and a depth-to-space: 9 multiply-adds per output pixel and
    channel pair (ResizeConv2x: 4). The trained weight is the 3x3 kernel."""

    def call(self, x):
        import tensorflow as tf

        cin = int(x.shape[-1])
        w = bilinear_conv_phases(keras.ops.cast(self.kernel, self.compute_dtype))  # (a, b, i, j, c, o)
        w = keras.ops.reshape(keras.ops.transpose(w, (2, 3, 4, 0, 1, 5)), (3, 3, cin, 4 * self.filters))
        padded = tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]], mode="SYMMETRIC")  # one pixel: the edge repeated
        y = tf.nn.depth_to_space(keras.ops.conv(padded, w, strides=1, padding="valid"), 2)  # channel (2a + b) * out + o
        return y + keras.ops.cast(self.bias, self.compute_dtype)


NOISE_SEED = 20261205  # the fixed projections of --g-noise (stored in the model's weights too)
NOISE_GAIN = 1.0  # projection weights ~ N(0, gain): with z ~ N(0, I_100) the sine's argument has sd 10


def noise_projection(index: int, latent_dim: int, pixels: int) -> tuple[np.ndarray, np.ndarray]:
    """The fixed (projection (latent_dim, pixels), phase (pixels,)) of PixelNoise number `index`:
    a function of the index and the shapes only (NOISE_SEED), so a saved model needs no copy."""
    rng = np.random.default_rng(NOISE_SEED + index)
    return (rng.normal(0.0, NOISE_GAIN, (latent_dim, pixels)).astype(np.float32),
            rng.uniform(0.0, 2 * np.pi, pixels).astype(np.float32))


@keras.saving.register_keras_serializable(package="cxr")
class PixelNoise(layers.Layer):
    """x + strength[c] * n(z): per-pixel noise (Karras et al. 2019, "A Style-Based Generator
    Architecture") whose values are a fixed function of the latent z, n = sqrt(2) sin(z W + b)
    with a fixed random projection W (latent_dim, H * W) and phase b (not trained), so the
    same latent gives the same image everywhere (no extra input, no random state; W and b are
    rebuilt from NOISE_SEED, `noise_projection`). The sine of
    an argument of standard deviation 10 decorrelates the noise of different latents and of
    neighbouring pixels; sqrt(2) gives it unit variance. `strength` (one per channel) is learned
    from 0. Computed in float32 whatever the layer's policy."""

    def __init__(self, index: int = 0, **kwargs):
        kwargs.setdefault("autocast", False)  # its variables stay float32 under a mixed policy
        super().__init__(**kwargs)
        self.index = int(index)

    def build(self, input_shape):
        x_shape, z_shape = input_shape
        h, w, c = (int(v) for v in x_shape[1:])
        self.projection, self.phase = noise_projection(self.index, int(z_shape[-1]), h * w)
        self.strength = self.add_weight(name="strength", shape=(c,), initializer="zeros", dtype="float32")

    def call(self, inputs):
        x, z = inputs
        h, w = int(x.shape[1]), int(x.shape[2])
        arg = keras.ops.matmul(keras.ops.cast(z, "float32"), keras.ops.convert_to_tensor(self.projection)) + \
            keras.ops.convert_to_tensor(self.phase)
        noise = keras.ops.reshape(keras.ops.sin(arg) * np.float32(np.sqrt(2.0)), (-1, h, w, 1))
        return x + keras.ops.cast(noise, x.dtype) * keras.ops.cast(self.strength, x.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape[0]

    def get_config(self):
        return {**super().get_config(), "index": self.index}


def build_generator(cfg: Config, precision: str | None = None) -> keras.Model:
    """z (latent_dim,) -> image (size, size, 1) in [-1, 1] (tanh). A labelled run (cfg.classes)
    takes the latent and the one-hot class as one vector (latent_dim + classes,): its first layer
    is the same Dense on the longer input (a class embedding joined to z).

    `precision` (default: cfg.precision; "auto" builds float32) sets the layers' dtype
    policy; under mixed precision the tanh and the image are float32 (an extra weightless
    `g_out_tanh` layer), so both variants hold the same weights in the same order.
    """
    dt = _dtype(cfg.precision if precision is None else precision)
    base = cfg.image_size // 2 ** len(cfg.g_channels)
    z = keras.Input(shape=(cfg.input_dim,), name="z")  # a labelled run: the latent, then the one-hot class
    x = layers.Dense(base * base * cfg.g_dense_channels, name="g_dense", dtype=dt)(z)
    x = layers.LeakyReLU(negative_slope=cfg.leaky_slope, name="g_dense_lrelu", dtype=dt)(x)
    x = layers.Reshape((base, base, cfg.g_dense_channels), name="g_reshape", dtype=dt)(x)
    ladder = (*cfg.g_channels, cfg.g_supersample) if cfg.g_supersample else cfg.g_channels
    for i, ch in enumerate(ladder, start=1):
        kind = cfg.g_upsample_last if i == len(ladder) and cfg.g_upsample_last else cfg.g_upsample
        if kind == "resize":
            x = ResizeConv2x(ch, name=f"g_up{i}", dtype=dt)(x)
        elif kind == "bilinear":
            x = BilinearConv2x(ch, name=f"g_up{i}", dtype=dt)(x)
        else:
            x = layers.Conv2DTranspose(ch, cfg.g_kernel, strides=2, padding="same", name=f"g_up{i}", dtype=dt)(x)
        x = layers.LeakyReLU(negative_slope=cfg.leaky_slope, name=f"g_up{i}_lrelu", dtype=dt)(x)
        if cfg.g_noise:
            x = PixelNoise(i, name=f"g_up{i}_noise", dtype=dt)([x, z])
    if cfg.g_refine:  # a 3x3 convolution at full resolution before the output one
        x = layers.Conv2D(cfg.g_refine, 3, padding="same", name="g_refine", dtype=dt)(x)
        x = layers.LeakyReLU(negative_slope=cfg.leaky_slope, name="g_refine_lrelu", dtype=dt)(x)
    if dt is None:
        image = layers.Conv2D(1, cfg.g_kernel, padding="same", activation="tanh", name="g_out")(x)
    else:
        # the output convolution in the mixed policy (D rounds its input to that precision
        # anyway); tanh and the image in float32. Same weights as the float32 network.
        x = layers.Conv2D(1, cfg.g_kernel, padding="same", name="g_out", dtype=dt)(x)
        image = layers.Activation("tanh", name="g_out_tanh", dtype="float32")(x)
    if cfg.g_supersample:  # drawn at twice the size: each pixel the mean of its 2x2 block
        image = layers.AveragePooling2D(2, name="g_supersample_pool", dtype="float32")(image)
    return keras.Model(z, image, name="generator")


@keras.saving.register_keras_serializable(package="cxr")
class MinibatchStdDev(layers.Layer):
    """Appends one channel: the standard deviation of each feature over the batch, averaged
    over features and spatial positions (Karras et al. 2018, "Progressive Growing of GANs").
    A batch of near-identical generated images has a telltale low value, so D can penalise
    collapse. Statistics over the whole batch (real and generated batches are passed to D
    separately when this layer is on); under a distribution strategy over the global batch,
    every replica's rows together (all-reduced), so replicas compute what one device computes."""

    def call(self, x):
        import tensorflow as tf

        ctx = tf.distribute.get_replica_context()
        if ctx is None or ctx.num_replicas_in_sync == 1:
            std = keras.ops.sqrt(keras.ops.var(x, axis=0) + 1e-8)  # (H, W, C)
        else:  # the global batch's mean, then its variance, from all-reduced sums (differentiable)
            n = ctx.all_reduce("sum", tf.cast(tf.shape(x)[0], x.dtype))
            mean = ctx.all_reduce("sum", tf.reduce_sum(x, axis=0)) / n
            var = ctx.all_reduce("sum", tf.reduce_sum(tf.square(x - mean), axis=0)) / n
            std = tf.sqrt(var + 1e-8)
        feature = keras.ops.mean(std)
        shape = keras.ops.shape(x)
        extra = keras.ops.ones((shape[0], shape[1], shape[2], 1), dtype=x.dtype) * keras.ops.cast(feature, x.dtype)
        return keras.ops.concatenate([x, extra], axis=-1)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], input_shape[-1] + 1)


@keras.saving.register_keras_serializable(package="cxr")
class HighPass(layers.Layer):
    """The fine detail of an image: the image minus its Gaussian blur (sigma 1 px, a fixed 7x7
    kernel, reflected borders). No weights."""

    SIGMA = 1.0

    def call(self, x):
        import numpy as np

        r = np.arange(-3, 4, dtype=np.float32)
        g = np.exp(-0.5 * (r / self.SIGMA) ** 2)
        g /= g.sum()
        kernel = keras.ops.convert_to_tensor(np.outer(g, g)[:, :, None, None], dtype=x.dtype)
        import tensorflow as tf

        padded = tf.pad(x, [[0, 0], [3, 3], [3, 3], [0, 0]], mode="REFLECT")
        return x - keras.ops.conv(padded, kernel, strides=1, padding="valid")


SPECTRUM_BANDS = 32


def radial_power(images, bands: int = SPECTRUM_BANDS):
    """(B, S, S, 1) -> (B, bands) float32: each image's mean power in radial frequency bands (mean
    removed, Hann window; DC left out; the corners beyond Nyquist in the last band)."""
    import numpy as np
    import tensorflow as tf

    size = int(images.shape[1])
    f = np.fft.fftfreq(size)
    r = np.hypot(f[:, None], f[None, :])
    band = np.minimum((r / 0.5 * (bands - 1)).astype(np.int64), bands - 1)
    onehot = (band.ravel()[:, None] == np.arange(bands)[None, :]).astype(np.float32)
    onehot[0] = 0.0  # DC
    onehot /= np.maximum(onehot.sum(axis=0, keepdims=True), 1.0)
    window = np.outer(np.hanning(size), np.hanning(size)).astype(np.float32)
    x = tf.cast(images[..., 0], tf.float32)
    x = (x - tf.reduce_mean(x, axis=[1, 2], keepdims=True)) * window
    power = tf.math.square(tf.abs(tf.signal.fft2d(tf.cast(x, tf.complex64))))
    return tf.matmul(tf.reshape(power, (-1, size * size)), tf.constant(onehot))


def image_tiles(images, tile: int):
    """(B, S, S, C) -> (B * (S/tile)**2, tile, tile, C): each image's non-overlapping tiles, row by
    row, the images one after the other."""
    import tensorflow as tf

    size, ch = int(images.shape[1]), int(images.shape[-1])
    n = size // tile
    x = tf.reshape(images, (-1, n, tile, n, tile, ch))
    return tf.reshape(tf.transpose(x, (0, 1, 3, 2, 4, 5)), (-1, tile, tile, ch))


@keras.saving.register_keras_serializable(package="cxr")
class LogSpectrum(layers.Layer):
    """Each image's log10 radially averaged power spectrum (radial_power), float32: (B, 32); with
    `tile` T, each T x T tile's (mean removed and windowed per tile, T/2 bands): (B, tiles, T/2).
    No weights."""

    def __init__(self, tile: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.tile = int(tile)

    def call(self, x):
        import tensorflow as tf

        if not self.tile:
            return tf.math.log(radial_power(x) + 1e-8) / tf.math.log(10.0)
        n = int(x.shape[1]) // self.tile
        power = radial_power(image_tiles(x, self.tile), self.tile // 2)
        return tf.reshape(tf.math.log(power + 1e-8) / tf.math.log(10.0), (-1, n * n, self.tile // 2))

    def compute_output_shape(self, input_shape):
        if not self.tile:
            return (input_shape[0], SPECTRUM_BANDS)
        return (input_shape[0], (int(input_shape[1]) // self.tile) ** 2, self.tile // 2)

    def get_config(self):
        return {**super().get_config(), "tile": self.tile}


def _patch_head(x, channels: int, prefix: str, out_name: str, cfg: Config, dt):
    """A PatchGAN-style judge of local texture: 3x3 convolutions of `channels` (strides 1, 2, 2;
    each output sees a 9x9 patch), a 1x1 convolution to one logit per patch, their mean."""
    for i, stride in enumerate((1, 2, 2), start=1):
        x = layers.Conv2D(channels, 3, strides=stride, padding="same", name=f"{prefix}_conv{i}", dtype=dt)(x)
        x = layers.LeakyReLU(negative_slope=cfg.leaky_slope, name=f"{prefix}_conv{i}_lrelu", dtype=dt)(x)
    x = layers.Conv2D(1, 1, name=out_name, dtype="float32")(x)
    return layers.GlobalAveragePooling2D(name=f"{prefix}_mean", dtype="float32")(x)


def build_discriminator(cfg: Config, precision: str | None = None) -> keras.Model:
    """image (size, size, 1) -> probability that it is real (sigmoid); the output layers
    always compute in float32 (see build_generator for `precision`). A labelled run's D sees
    the image and its one-hot class as constant channels (size, size, 1 + classes): labels
    joined to the input (Mirza and Osindero 2014).

    The logit is the output of the layer named `d_out` (LOGIT_LAYER); `d_prob` applies the
    sigmoid. gan.py trains on the logit (R1 and the adaptive augmentation need it)."""
    dt = _dtype(cfg.precision if precision is None else precision)
    # a labelled run: the image, then one constant channel per class (its one-hot label)
    image = keras.Input(shape=(cfg.image_size, cfg.image_size, 1 + cfg.n_classes), name="image")
    projection = bool(cfg.n_classes) and cfg.d_condition == "projection"
    # projection: the convolutions see the image alone; the class enters at the logit
    x = image[..., :1] if projection else image
    for i, (ch, stride) in enumerate(zip(cfg.d_channels, cfg.d_strides), start=1):
        x = layers.Conv2D(ch, cfg.d_kernel, strides=stride, padding="same", name=f"d_conv{i}", dtype=dt)(x)
        x = layers.LeakyReLU(negative_slope=cfg.leaky_slope, name=f"d_conv{i}_lrelu", dtype=dt)(x)
    if cfg.d_mbstd:
        x = MinibatchStdDev(name="d_mbstd", dtype=dt)(x)
    x = layers.Flatten(name="d_flatten", dtype=dt)(x)
    x = layers.Dropout(cfg.d_dropout, seed=cfg.seed, name="d_dropout", dtype=dt)(x)
    heads = []
    if projection:  # Miyato and Koyama 2018: + <embed(class), features>, the class read off its channels
        onehot = image[:, 0, 0, 1:]
        embed = layers.Dense(int(x.shape[-1]), use_bias=False, name="d_class_embed", dtype="float32")(onehot)
        heads.append(layers.Dot(axes=1, name="d_projection", dtype="float32")([embed, x]))
    if not heads and not cfg.d_highpass and not cfg.d_patch and not cfg.d_spectrum:
        logit = layers.Dense(1, name=LOGIT_LAYER, dtype="float32")(x)
    else:  # the global head's logit plus each extra head's (layers made in this order: the seed's weights)
        heads.insert(0, layers.Dense(1, name="d_main", dtype="float32")(x))
        grey = image[..., :1] if cfg.n_classes else image
        if cfg.d_highpass:  # the texture head: patch logits on the fine detail
            hp = HighPass(name="d_hp_input", dtype=dt)(grey)
            heads.append(_patch_head(hp, cfg.d_highpass, "d_hp", "d_hp_patch", cfg, dt))
        if cfg.d_patch:  # the same on the full-resolution image itself
            heads.append(_patch_head(grey, cfg.d_patch, "d_patch", "d_patch_logits", cfg, dt))
        if cfg.d_spectrum:  # each image's spectrum: what up-sampling gets wrong (Durall et al. 2020)
            spec = LogSpectrum(cfg.d_spectrum_tile, name="d_spec_input", dtype="float32")(grey)
            # with tiles: the same Dense layers on every tile's spectrum (its last axis), then the mean
            spec = layers.Dense(cfg.d_spectrum, name="d_spec_dense", dtype="float32")(spec)
            spec = layers.LeakyReLU(negative_slope=cfg.leaky_slope, name="d_spec_lrelu", dtype="float32")(spec)
            # from zero: its raw log powers (about 1.5 +- 0.1 per band on radiographs) would otherwise
            # give a logit of several units at initialisation, whatever the image
            spec = layers.Dense(1, kernel_initializer="zeros", name="d_spec_logit", dtype="float32")(spec)
            if cfg.d_spectrum_tile:
                spec = layers.GlobalAveragePooling1D(name="d_spec_mean", dtype="float32")(spec)
            heads.append(spec)
        logit = layers.Add(name=LOGIT_LAYER, dtype="float32")(heads)
    p = layers.Activation("sigmoid", name="d_prob", dtype="float32")(logit)
    return keras.Model(image, p, name="discriminator")



def load_generator(path) -> keras.Model:
    """A saved generator.keras, its custom layers (ResizeConv2x, BilinearConv2x) known to Keras."""
    return keras.models.load_model(path, compile=False,
                                   custom_objects={"ResizeConv2x": ResizeConv2x, "BilinearConv2x": BilinearConv2x,
                                                   "PixelNoise": PixelNoise})


def logit_model(discriminator: keras.Model) -> keras.Model:
    """The same discriminator (shared layers and weights), returning the logit."""
    return keras.Model(discriminator.inputs, discriminator.get_layer(LOGIT_LAYER).output, name="d_logit")
