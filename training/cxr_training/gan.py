"""The adversarial training step, as a `keras.Model` subclass.

One step (Goodfellow et al. 2014, with the non-saturating generator loss):
1. D sees a batch of real images (label 1) and as many generated ones (label 0) and
   takes one Adam step on the binary cross-entropy;
2. G takes one Adam step on -log D(G(z)) (BCE against label 1), only G's weights updated.

Where the batch comes from: the input pipeline (pipeline.py) hands each replica its
rows of the step's real batch together with the global step; both latent batches are
drawn in-graph with stateless random ops seeded by (seed, step), and each replica takes
its rows of them. So a resumed run, a distributed run and a single-device run draw the
same batches. The step also checks that the pipeline's step is the model's own global
step (`global_step`, restored from checkpoints), so the two can never drift apart.

Under a distribution strategy each replica's losses are means over its own rows; they
are divided by the number of replicas before the gradients, which the optimizer sums
across replicas: the update equals the single-device update on the global batch.
Mixed precision: the output layers are float32 (models.py) and, for float16, both
optimizers are LossScaleOptimizers (dynamic loss scaling), see precision.py.

The data-efficient recipe (Config fields; all off in the 'paper' preset, whose step is
then exactly the one above):
- augmentation (augment.py) of real and generated images before every D call, in both
  phases; with `augment="adaptive"` its probability p follows ADA's controller (_adapt), driven
  by D's real logits (ADA's r_t) or by D's verdict on training images withheld from it
  (ada_signal "validation");
- R1 gradient penalty on D (d_phase_loss); one-sided label smoothing of D's real targets;
- the LeCam regularisation of D's logits (lecam_penalty, its moving averages in _update_lecam);
- minibatch standard deviation in D (models.py);
- an EMA of G's weights (_update_ema) that sampler() returns for grids, snapshots and export;
- `shared_fake`: one forward pass of G per step instead of two; D's phase and G's phase use
  the same latent batch, G's loss taken through D after D's update.
D's loss is computed from its logits; the sigmoid is folded into the cross-entropy exactly
as Keras does for a sigmoid output, so the paper's step computes what it computed before.
"""

from __future__ import annotations

from cxr_training import augment
from cxr_training.config import Config
from cxr_training.models import HighPass, build_generator, logit_model, radial_power
from cxr_training.pipeline import replica_rows, step_latents
from cxr_training.tfenv import import_tf

tf, keras = import_tf()


@keras.saving.register_keras_serializable(package="cxr")
class LinearDecay(keras.optimizers.schedules.LearningRateSchedule):
    """The adaptive learning rate: constant, then linear decay to a fraction.

    The signal is training progress (the optimizer's step): the rate stays at `initial`
    until `start_fraction` of `total_steps`, then falls linearly to
    `initial * final_fraction` at the last step. Once D wins (the study's D reaches 100 %
    accuracy), smaller steps for both players damp the oscillation instead of letting D
    run away.
    """

    def __init__(self, initial, total_steps, start_fraction=0.5, final_fraction=0.1):
        self.initial = float(initial)
        self.total_steps = int(total_steps)
        self.start_fraction = float(start_fraction)
        self.final_fraction = float(final_fraction)

    def __call__(self, step):
        step = keras.ops.cast(step, "float32")
        start = self.start_fraction * self.total_steps
        span = max(self.total_steps - start, 1.0)
        progress = keras.ops.clip((step - start) / span, 0.0, 1.0)
        return self.initial * (1.0 - (1.0 - self.final_fraction) * progress)

    def get_config(self):
        return {
            "initial": self.initial,
            "total_steps": self.total_steps,
            "start_fraction": self.start_fraction,
            "final_fraction": self.final_fraction,
        }


def learning_rate(cfg: Config, initial: float):
    if cfg.lr_schedule == "constant":
        return initial
    return LinearDecay(initial, cfg.total_steps, cfg.lr_decay_start, cfg.lr_decay_final)


def make_optimizers(cfg: Config):
    """(d_optimizer, g_optimizer): Adam as DCGAN, with the configured rate schedule;
    wrapped in dynamic loss scaling when the precision is float16."""
    d_opt = keras.optimizers.Adam(learning_rate(cfg, cfg.d_lr), beta_1=cfg.beta_1, beta_2=cfg.beta_2, name="d_adam")
    g_opt = keras.optimizers.Adam(learning_rate(cfg, cfg.g_lr), beta_1=cfg.beta_1, beta_2=cfg.beta_2, name="g_adam")
    if cfg.precision == "float16":
        d_opt = keras.optimizers.LossScaleOptimizer(d_opt, name="d_loss_scale")
        g_opt = keras.optimizers.LossScaleOptimizer(g_opt, name="g_loss_scale")
    return d_opt, g_opt


def log_spectrum(images):
    """(B, S, S, 1) -> (SPECTRUM_BANDS,): log10 of the batch's mean power in radial frequency bands
    (Hann window, mean removed; DC left out; the corners beyond Nyquist in the last band)."""
    return tf.math.log(tf.reduce_mean(radial_power(images), axis=0) + 1e-8) / tf.math.log(10.0)


# The fine-detail term (g_detail): random directions in the space of k x k patches of the fine
# detail, and the pixel positions compared per step (a fixed number, drawn at random).
DETAIL_DIRECTIONS = 32
DETAIL_POSITIONS = 16384
DETAIL_SEED_OFFSET = 0x6465  # keeps its stateless seeds apart from the latents' (seed, 3 step + stream)


def fine_detail(images):
    """(B, S, S, 1) -> (B, S-6, S-6, 1) float32: D's high-pass filter (models.HighPass: the image
    minus its sigma-1 blur) where the blur's 7x7 window lies inside the image (no reflected border)."""
    return HighPass(dtype="float32")(tf.cast(images, tf.float32))[:, 3:-3, 3:-3, :]


def detail_swd(fake, real, key, patch: int):
    """Sliced Wasserstein distance between the k x k patches (k = patch) of the fine detail of
    the generated and of the real batch, each image's fine detail divided by its own RMS first:
    for each of DETAIL_DIRECTIONS random unit directions (drawn from `key`, a stateless seed, the
    same for both batches), the patches at DETAIL_POSITIONS random positions of each batch are
    projected on it and sorted; the mean squared difference of the two sorted lists, over the
    real ones' mean square. It compares the shape of each image's fine detail, not its amount:
    sparse (flat regions, a few sharp edges: a real radiograph's detail kurtosis is about 20) or
    spread evenly (Gaussian-like: 3), and its local pattern. Without the division the batch's
    pooled values would match as soon as some images are sharp and others smooth. (Heitz et al.
    2021 use the sliced distance on network features for texture synthesis.)"""
    dims = patch * patch
    keys = tf.random.experimental.stateless_split(key, 3)
    directions = tf.random.stateless_normal([dims, DETAIL_DIRECTIONS], seed=keys[0])
    directions = directions / tf.norm(directions, axis=0, keepdims=True)
    filters = tf.reshape(directions, [patch, patch, 1, DETAIL_DIRECTIONS])

    def projections(images, k):
        detail = fine_detail(images)
        detail = detail * tf.math.rsqrt(tf.reduce_mean(tf.square(detail), axis=[1, 2, 3], keepdims=True) + 1e-12)
        p = tf.reshape(tf.nn.conv2d(detail, filters, 1, "VALID"), [-1, DETAIL_DIRECTIONS])
        rows = tf.random.stateless_uniform([DETAIL_POSITIONS], seed=k, minval=0, maxval=tf.shape(p)[0],
                                           dtype=tf.int32)
        return tf.sort(tf.transpose(tf.gather(p, rows)), axis=-1)  # (directions, positions)

    f = projections(fake, keys[1])
    r = tf.stop_gradient(projections(real, keys[2]))
    return tf.reduce_mean(tf.square(f - r)) / (tf.reduce_mean(tf.square(r)) + 1e-12)


class GAN(keras.Model):
    """Owns G, D, their optimizers, the global step and the alternating train_step, plus the
    data-efficient recipe's state: the augmentation probability (and ADA's running sums)
    and the EMA copy of G's weights."""

    def __init__(self, generator, discriminator, cfg: Config, **kwargs):
        super().__init__(name="gan", **kwargs)
        self.generator = generator
        self.discriminator = discriminator
        self.d_logit = logit_model(discriminator)  # same layers and weights, returns the logit
        self.cfg = cfg
        self.latent_dim = cfg.latent_dim
        self.batch_size = cfg.batch_size
        self.seed = cfg.seed
        # steps taken so far; the pipeline's elements must carry exactly this step
        self.global_step = keras.Variable(0, dtype="int64", trainable=False, name="global_step",
                                          aggregation="only_first_replica")
        self.g_loss_tracker = keras.metrics.Mean(name="g_loss")
        self.d_loss_tracker = keras.metrics.Mean(name="d_loss")
        self.r1_tracker = keras.metrics.Mean(name="r1") if cfg.r1_gamma > 0 else None
        self.lecam_tracker = keras.metrics.Mean(name="lecam") if cfg.lecam > 0 else None
        # recipe state (checkpointed, see recipe_state)
        self.augment_p = None
        self.ada_sums: list = []
        if cfg.augment != "off":
            start = cfg.ada_start if cfg.augment == "adaptive" else cfg.augment_p
            self.augment_p = keras.Variable(start, dtype="float32", trainable=False, name="augment_p",
                                            aggregation="only_first_replica")
        # ADA's state. Signal train: the sum of sign(D's real logits) and their count since the last
        # adjustment. Signal validation: the last measured shares of the probe and of the withheld
        # images that D calls real (set_validation gives the images).
        if cfg.augment == "adaptive":
            names = ("signs", "count") if cfg.ada_signal == "train" else ("probe_real", "withheld_real")
            self.ada_sums = [keras.Variable(0.0, dtype="float32", trainable=False, name=f"ada_{n}",
                                            aggregation="only_first_replica") for n in names]
        self.ada_probe = self.ada_withheld = None
        # LeCam's moving averages of D's mean logit on real and on generated images (not yet divided
        # by 1 - decay**steps: lecam_means)
        self.lecam_sums: list = []
        if cfg.lecam > 0:
            self.lecam_sums = [keras.Variable(0.0, dtype="float32", trainable=False, name=f"lecam_{n}",
                                              aggregation="only_first_replica") for n in ("real", "fake")]
        self.ema_weights: list = []
        self.ema_generator = None
        if cfg.ema:
            # initialised from a copy of G's weights (given the variable itself, Keras would share it)
            self.ema_weights = [keras.Variable(v.numpy().copy(), dtype="float32", trainable=False,
                                               name="ema_" + v.path.replace("/", "_"), aggregation="only_first_replica")
                                for v in generator.weights]
            self.ema_generator = build_generator(cfg, precision="float32")
        self._step_function = None
        self.built = True  # G and D are built functional models; nothing to infer

    def compile(self, d_optimizer, g_optimizer):
        super().compile()
        self.d_optimizer = d_optimizer
        self.g_optimizer = g_optimizer

    @staticmethod
    def bce(labels, logits):
        """Mean binary cross-entropy over this replica's rows, from D's logits (the sigmoid is
        folded in, as Keras does for a sigmoid output). Written out rather than
        keras.losses.BinaryCrossentropy(), which silently divides by the number of replicas
        under a strategy: here the division is explicit, in train_step."""
        return keras.ops.mean(keras.losses.binary_crossentropy(labels, logits, from_logits=True))

    @property
    def metrics(self):
        return [m for m in (self.g_loss_tracker, self.d_loss_tracker, self.r1_tracker, self.lecam_tracker)
                if m is not None]

    @property
    def step(self) -> int:
        return int(keras.ops.convert_to_numpy(self.global_step))

    def recipe_state(self) -> dict[str, list]:
        """Variables of the recipe that a checkpoint must hold (empty groups are left out)."""
        groups = {"augment": [v for v in (self.augment_p, *self.ada_sums) if v is not None], "ema": self.ema_weights,
                  "lecam": self.lecam_sums}
        return {k: v for k, v in groups.items() if v}

    def set_validation(self, probe, withheld):
        """ADA's validation signal (ada_signal "validation"): `withheld` [k, S, S] are training
        images D never trains on, `probe` as many that it does (data.split_validation). Call
        before the first step."""
        if self.cfg.ada_signal != "validation" or self.cfg.augment != "adaptive":
            raise ValueError("set_validation is for adaptive augmentation with ada_signal validation")
        if len(probe) != len(withheld) or not len(withheld):
            raise ValueError(f"the probe ({len(probe)}) and the withheld images ({len(withheld)}) must be as many, "
                             "and some")
        self.ada_probe, self.ada_withheld = (tf.constant(a[..., None], tf.float32) for a in (probe, withheld))
        self._step_function = None  # traced again with the images

    def validation_shares(self, step):
        """(share of the probe images D calls real, share of the withheld ones): both sets
        augmented with the same draws (slot SLOT_VALIDATION of the step) at the current p, D in
        inference mode (no dropout), so that the two differ only in whether D trains on them."""
        k = augment.key(self.seed, step, augment.SLOT_VALIDATION)
        shares = []
        for images in (self.ada_probe, self.ada_withheld):
            x = augment.augment(images, k, self.augment_p, self.cfg.augment_policy, images.shape[0])
            logit = tf.cast(self.d_logit(x, training=False), tf.float32)
            shares.append(tf.reduce_mean(tf.cast(logit > 0, tf.float32)))
        return tuple(shares)

    def sampler(self):
        """The generator that samples, snapshots and exports: the EMA copy when the recipe
        keeps one (its weights refreshed from the running average), else G itself."""
        if self.ema_generator is None:
            return self.generator
        for target, value in zip(self.ema_generator.weights, self.ema_weights):
            target.assign(value)
        return self.ema_generator

    def build_optimizers(self):
        """Create the optimizers' state now: before restoring a checkpoint into it, and before
        the first step (created lazily inside a distributed step it breaks under tf.distribute)."""
        self.d_optimizer.build(self.discriminator.trainable_variables)
        self.g_optimizer.build(self.generator.trainable_variables)

    def step_function(self):
        """The compiled step train.fit calls: `step(iterator)` takes the next element of the
        (distributed) input pipeline and runs train_step once per replica, `strategy.run`, the
        losses averaged over replicas. Compiled once per GAN."""
        if self._step_function is None:
            strategy = self.distribute_strategy

            @tf.function
            def one_step(iterator):
                outputs = strategy.run(self.train_step, args=(next(iterator),))
                if strategy.num_replicas_in_sync == 1:
                    return outputs
                return {k: strategy.reduce("MEAN", v, axis=None) for k, v in outputs.items()}

            self._step_function = one_step
        return self._step_function

    def _augmented(self, x, step, slot, start):
        if self.augment_p is None:
            return x
        return augment.augment(x, augment.key(self.seed, step, slot), self.augment_p, self.cfg.augment_policy,
                               self.batch_size, start)

    def with_class(self, z, labels):
        """G's input: the latent, then (a labelled run) the one-hot class."""
        if not self.cfg.n_classes:
            return z
        return tf.concat([z, tf.one_hot(labels, self.cfg.n_classes, dtype=z.dtype)], axis=1)

    def class_channels(self, x, labels):
        """D's input: the image, then (a labelled run) one constant channel per class."""
        if not self.cfg.n_classes:
            return x
        hot = tf.one_hot(labels, self.cfg.n_classes, dtype=x.dtype)[:, None, None, :]
        return tf.concat([x, tf.broadcast_to(hot, [tf.shape(x)[0], tf.shape(x)[1], tf.shape(x)[2],
                                                   self.cfg.n_classes])], axis=3)

    def fake_labels(self, start, rows):
        """The classes G is asked for at a step: every class alike, in turn (rows of this replica)."""
        if not self.cfg.n_classes:
            return None
        return (tf.range(start, start + rows) % self.cfg.n_classes)

    def _d_logits(self, step, real, fake, start, rows, real_labels=None, fake_labels=None):
        """D's logits on this replica's real and generated rows, each augmented first (the image;
        a labelled run's class channels join it after). With the minibatch-stddev layer the two
        batches go through D separately (its statistic must not mix them); otherwise in one call,
        as the study's step."""
        real_in = self.class_channels(self._augmented(real, step, augment.SLOT_D_REAL, start), real_labels)
        fake_in = self.class_channels(self._augmented(fake, step, augment.SLOT_D_FAKE, start), fake_labels)
        if self.cfg.d_mbstd:
            return self.d_logit(real_in, training=True), self.d_logit(fake_in, training=True)
        logits = self.d_logit(tf.concat([real_in, fake_in], axis=0), training=True)
        return logits[:rows], logits[rows:]

    def d_phase_loss(self, step, real, fake, start, rows, real_labels=None, fake_labels=None):
        """(BCE, R1 penalty, real logits, generated logits) of D's phase on this replica's rows; call it under the
        tape that differentiates D. Real images are labelled 1 - label_smoothing, generated 0.
        R1 (Mescheder et al. 2018, "Which Training Methods for GANs do actually Converge?"):
        gamma/2 * mean over images of |d D_logit(x) / dx|^2 at the real images x (taken before
        the augmentation, through it); the caller's tape differentiates through this inner
        gradient (double backpropagation)."""
        cfg = self.cfg
        if cfg.r1_gamma > 0:
            with tf.GradientTape(watch_accessed_variables=False) as inner:
                inner.watch(real)
                real_logit, fake_logit = self._d_logits(step, real, fake, start, rows, real_labels, fake_labels)
                real_sum = tf.reduce_sum(real_logit)  # the sum: per-image gradients (with mbstd, as in StyleGAN2)
            grad = inner.gradient(real_sum, real)
            r1 = 0.5 * cfg.r1_gamma * tf.reduce_mean(tf.reduce_sum(tf.square(grad), axis=[1, 2, 3]))
        else:
            real_logit, fake_logit = self._d_logits(step, real, fake, start, rows, real_labels, fake_labels)
            r1 = tf.constant(0.0)
        labels = tf.concat([tf.fill((rows, 1), 1.0 - cfg.label_smoothing), tf.zeros((rows, 1))], axis=0)
        d_loss = self.bce(labels, tf.concat([real_logit, fake_logit], axis=0))
        return d_loss, r1, real_logit, fake_logit

    def lecam_means(self, step):
        """LeCam's (mean_real, mean_fake): the moving averages of D's mean logit on real and on
        generated images over steps 0 .. step-1, bias-corrected (divided by 1 - decay**step, as
        Adam's moments: the sums start at 0); (0, 0) at step 0, where there is no history."""
        history = 1.0 - tf.pow(tf.constant(self.cfg.lecam_decay, tf.float32), tf.cast(step, tf.float32))
        # no division by 0 at step 0: lecam_penalty's tf.where discards the step-0 term, but a NaN in
        # it would still reach D's gradients through the where
        scale = tf.where(history > 0, 1.0 / tf.maximum(history, 1e-12), 0.0)
        return tuple(tf.stop_gradient(v * scale) for v in self.lecam_sums)

    def lecam_penalty(self, step, real_logit, fake_logit):
        """lecam * (mean relu(real logit - mean_fake)^2 + mean relu(mean_real - generated logit)^2)
        over this replica's rows (Tseng et al. 2021, "Regularizing Generative Adversarial Networks
        under Limited Data"): D is penalised for calling a real image more real than it has called
        generated ones of late, and a generated one more fake than it has called real ones; a D that
        memorises the training images drives its two verdicts apart, and the term holds them near
        each other. 0 when off and at step 0."""
        if not self.cfg.lecam:
            return tf.constant(0.0)
        mean_real, mean_fake = self.lecam_means(step)
        real_logit, fake_logit = tf.cast(real_logit, tf.float32), tf.cast(fake_logit, tf.float32)
        term = (tf.reduce_mean(tf.square(tf.nn.relu(real_logit - mean_fake)))
                + tf.reduce_mean(tf.square(tf.nn.relu(mean_real - fake_logit))))
        return tf.where(tf.cast(step, tf.float32) > 0, self.cfg.lecam * term, 0.0)

    def _update_lecam(self, ctx, real_logit, fake_logit):
        """sums <- decay * sums + (1 - decay) * D's mean logit on this step's real (generated)
        images, over all replicas' rows."""
        totals = [tf.reduce_sum(tf.cast(x, tf.float32)) for x in (real_logit, fake_logit)]
        count = tf.cast(tf.shape(real_logit)[0], tf.float32)
        if ctx.num_replicas_in_sync > 1:
            *totals, count = ctx.all_reduce("sum", [*totals, count])
        decay = self.cfg.lecam_decay
        for v, total in zip(self.lecam_sums, totals):
            v.assign(decay * v + (1.0 - decay) * total / count)

    def train_step(self, data):
        # from pipeline.dataset: this replica's rows of the step's real batch (and their classes)
        step, real, real_labels = data if len(data) == 3 else (*data, None)
        ctx = tf.distribute.get_replica_context()
        replicas = ctx.num_replicas_in_sync
        start, rows = replica_rows(ctx.replica_id_in_sync_group, replicas, self.batch_size)
        tf.debugging.assert_equal(step, self.global_step, message="input pipeline out of step with the model")
        fake_labels = self.fake_labels(start, rows)
        z_d = self.with_class(step_latents(self.seed, step, 1, self.batch_size, self.latent_dim)[start : start + rows],
                              fake_labels)
        z_g = self.with_class(step_latents(self.seed, step, 2, self.batch_size, self.latent_dim)[start : start + rows],
                              fake_labels)
        labels = {"real_labels": real_labels, "fake_labels": fake_labels}

        def for_gradients(loss, optimizer):
            if replicas > 1:  # the optimizer sums the replicas' gradients
                loss = loss / replicas
            return optimizer.scale_loss(loss)  # loss scaling under float16, identity otherwise

        d_vars, g_vars = self.discriminator.trainable_variables, self.generator.trainable_variables
        if self.cfg.shared_fake:
            # One forward pass of G: the tape on G keeps its activations while D takes its step
            # on the (gradient-stopped) batch, then G's loss is taken through the updated D.
            with tf.GradientTape() as g_tape:
                fake = self.generator(z_d, training=True)
                with tf.GradientTape() as tape:
                    d_loss, r1, real_logit, fake_logit = self.d_phase_loss(step, real, tf.stop_gradient(fake), start,
                                                                           rows, **labels)
                    lecam = self.lecam_penalty(step, real_logit, fake_logit)
                    d_scaled = for_gradients(d_loss + r1 + lecam, self.d_optimizer)
                self.d_optimizer.apply_gradients(zip(tape.gradient(d_scaled, d_vars), d_vars))
                g_loss = self.bce(tf.ones((rows, 1)), self.d_logit(self.class_channels(
                    self._augmented(fake, step, augment.SLOT_G_FAKE, start), fake_labels), training=True))
                g_scaled = for_gradients(g_loss + self._spectral(fake, real) + self._detail(fake, real, step),
                                         self.g_optimizer)
            self.g_optimizer.apply_gradients(zip(g_tape.gradient(g_scaled, g_vars), g_vars))
        else:
            with tf.GradientTape() as tape:
                fake = self.generator(z_d, training=True)
                d_loss, r1, real_logit, fake_logit = self.d_phase_loss(step, real, fake, start, rows, **labels)
                lecam = self.lecam_penalty(step, real_logit, fake_logit)
                d_scaled = for_gradients(d_loss + r1 + lecam, self.d_optimizer)
            self.d_optimizer.apply_gradients(zip(tape.gradient(d_scaled, d_vars), d_vars))

            # G's phase: the non-saturating loss -log D(G(z)), through the same augmentation
            with tf.GradientTape() as tape:
                generated = self.generator(z_g, training=True)
                fake = self._augmented(generated, step, augment.SLOT_G_FAKE, start)
                g_loss = self.bce(tf.ones((rows, 1)), self.d_logit(self.class_channels(fake, fake_labels),
                                                                   training=True))
                g_scaled = for_gradients(g_loss + self._spectral(generated, real) + self._detail(generated, real, step),
                                         self.g_optimizer)
            self.g_optimizer.apply_gradients(zip(tape.gradient(g_scaled, g_vars), g_vars))

        if self.ema_weights:
            self._update_ema(step)
        if self.ada_sums:
            self._adapt(ctx, step, real_logit)
        if self.lecam_sums:
            self._update_lecam(ctx, real_logit, fake_logit)
        self.global_step.assign(step + 1)
        self.d_loss_tracker.update_state(d_loss)
        self.g_loss_tracker.update_state(g_loss)
        logs = {"g_loss": self.g_loss_tracker.result(), "d_loss": self.d_loss_tracker.result()}
        if self.r1_tracker is not None:
            self.r1_tracker.update_state(r1)
            logs["r1"] = self.r1_tracker.result()
        if self.lecam_tracker is not None:
            self.lecam_tracker.update_state(lecam)
            logs["lecam"] = self.lecam_tracker.result()
        return logs

    def _spectral(self, fake, real):
        """g_spectral * mean over radial bands of (log mean power of the generated batch - that of
        the real batch)^2: G is pulled toward the real images' distribution of energy over
        spatial frequencies (fine detail included). 0 when off."""
        if not self.cfg.g_spectral:
            return tf.constant(0.0)
        return self.cfg.g_spectral * tf.reduce_mean(tf.square(
            log_spectrum(tf.cast(fake, tf.float32)) - tf.stop_gradient(log_spectrum(tf.cast(real, tf.float32)))))

    def _detail(self, fake, real, step):
        """g_detail * detail_swd(generated batch, real batch): G is pulled toward the real images'
        distribution of fine-detail patches (directions and positions drawn from (seed, step), so
        a resumed run draws the same ones). 0 when off."""
        if not self.cfg.g_detail:
            return tf.constant(0.0)
        key = tf.stack([tf.cast(self.seed, tf.int64) + DETAIL_SEED_OFFSET, tf.cast(step, tf.int64)])
        return self.cfg.g_detail * detail_swd(fake, real, key, self.cfg.g_detail_patch)

    def _update_ema(self, step):
        """ema <- beta * ema + (1 - beta) * weights, beta = 0.5 ** (1 / half-life); the half-life
        (in steps) is ema_rampup * steps done, capped at ema_halflife."""
        cfg = self.cfg
        halflife = tf.constant(cfg.ema_halflife, tf.float32)
        if cfg.ema_rampup > 0:
            halflife = tf.minimum(halflife, cfg.ema_rampup * tf.cast(step + 1, tf.float32))
        beta = tf.pow(0.5, 1.0 / tf.maximum(halflife, 1e-8))
        for e, w in zip(self.ema_weights, self.generator.weights):
            e.assign(w + beta * (e - w))

    def _adapt(self, ctx, step, real_logit):
        """ADA's controller: every ada_interval steps, move p by interval / ada_speed toward
        r_t = E[sign(D's real logits)] == ada_target (r_t above target: D is overfitting); with
        the validation signal, toward (share of the probe D calls real) - (share of the withheld
        images) == ada_gap."""
        cfg = self.cfg
        # no tf.cond around assignments: an assignment inside control flow cannot synchronise
        # replicas, so the adjustment is computed every step and applied with weight 1 on
        # adjustment steps only
        now = tf.cast(tf.equal((step + 1) % cfg.ada_interval, 0), tf.float32)
        if cfg.ada_signal == "validation":
            if self.ada_withheld is None:
                raise ValueError("ada_signal validation: the withheld images are not set (GAN.set_validation)")
            # D's verdicts only on adjustment steps (no assignment inside the cond); every replica
            # computes the same shares from the same weights and images
            shares = tf.cond(now > 0, lambda: self.validation_shares(step), lambda: (tf.zeros(()), tf.zeros(())))
            for v, x in zip(self.ada_sums, shares):
                v.assign(now * x + (1.0 - now) * v)
            p = self.augment_p + now * tf.sign(shares[0] - shares[1] - cfg.ada_gap) * (cfg.ada_interval / cfg.ada_speed)
            self.augment_p.assign(tf.clip_by_value(p, 0.0, 1.0))
            return
        signs = tf.reduce_sum(tf.sign(tf.cast(real_logit, tf.float32)))
        count = tf.cast(tf.shape(real_logit)[0], tf.float32)
        if ctx.num_replicas_in_sync > 1:
            signs, count = ctx.all_reduce("sum", [signs, count])
        total, seen = self.ada_sums
        total.assign_add(signs)
        seen.assign_add(count)
        r_t = total / tf.maximum(seen, 1.0)
        p = self.augment_p + now * tf.sign(r_t - cfg.ada_target) * (cfg.ada_interval / cfg.ada_speed)
        self.augment_p.assign(tf.clip_by_value(p, 0.0, 1.0))
        total.assign(total * (1.0 - now))
        seen.assign(seen * (1.0 - now))
