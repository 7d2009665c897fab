"""Distribution strategies (`--strategy`), on TensorFlow's own `tf.distribute`.

- `default`: one device (TensorFlow's default strategy; a GPU if one is visible).
- `mirrored`: `MirroredStrategy` over every local GPU (synchronous data parallelism on one
  host). Without GPUs it mirrors over the CPU device(s); `CXR_LOGICAL_CPUS=N` splits the
  CPU into N logical devices first (for tests and demonstrations: it adds no compute).
- `multiworker`: `MultiWorkerMirroredStrategy` across hosts, each mirroring over its local
  GPUs (or its CPU). The cluster comes from the `TF_CONFIG` environment variable, one per
  process; see docs/training.md for a two-host example. Every worker must see the same
  data and, to resume, the same run folder (shared storage or a copy).

The global batch (`--batch-size`) is split evenly across all replicas, so it must be a
multiple of their number; losses and gradients are reduced so that an update equals the
single-device update on the same global batch (gan.py). The chief (worker 0, or the
`chief` task) writes the run folder; the other workers do the same work in a scratch
folder that is removed at the end (the collective operations need every worker to run
the same steps, evaluation and checkpoint reads included).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from cxr_training.errors import StrategyError  # noqa: F401  (re-exported)
from cxr_training.tfenv import import_tf

STRATEGIES = ("default", "mirrored", "multiworker")
LOGICAL_CPUS_ENV = "CXR_LOGICAL_CPUS"


@dataclass
class Placement:
    strategy: object  # tf.distribute.Strategy
    name: str
    replicas: int  # replicas in sync, all workers together
    workers: int
    worker: int  # this process's worker index (0 = chief)
    chief: bool

    def describe(self) -> str:
        if self.name == "default":
            return "default strategy (1 replica)"
        extra = f", worker {self.worker} of {self.workers}" if self.workers > 1 else ""
        return f"{self.name} strategy, {self.replicas} replicas{extra}"


def _split_cpu(tf, count: int) -> None:
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * count)
    except RuntimeError as e:  # the runtime is already initialised in this process
        raise StrategyError(f"{LOGICAL_CPUS_ENV}={count} must be set before TensorFlow starts ({e})") from None


def _logical_cpus() -> int:
    raw = os.environ.get(LOGICAL_CPUS_ENV, "").strip()
    if not raw:
        return 0
    try:
        n = int(raw)
    except ValueError:
        raise StrategyError(f"{LOGICAL_CPUS_ENV} must be a whole number, not {raw!r}") from None
    if n < 1:
        raise StrategyError(f"{LOGICAL_CPUS_ENV} must be >= 1")
    return n


def tf_config() -> dict:
    """The parsed TF_CONFIG, checked for the fields MultiWorkerMirroredStrategy needs."""
    raw = os.environ.get("TF_CONFIG", "")
    if not raw.strip():
        raise StrategyError("--strategy multiworker needs TF_CONFIG (cluster and task); see docs/training.md")
    try:
        conf = json.loads(raw)
        cluster, task = conf["cluster"], conf["task"]
        kind, index = task["type"], int(task["index"])
        hosts = cluster[kind]
    except (ValueError, KeyError, TypeError) as e:
        raise StrategyError(f"TF_CONFIG is not valid JSON with cluster and task ({e})") from None
    if kind not in ("chief", "worker"):
        raise StrategyError(f"TF_CONFIG task type must be chief or worker, not {kind!r}")
    if not 0 <= index < len(hosts):
        raise StrategyError(f"TF_CONFIG task index {index} is outside cluster[{kind!r}] ({len(hosts)} hosts)")
    return conf


def make(name: str) -> Placement:
    """Create the strategy; call before any other TensorFlow work in the process."""
    if name not in STRATEGIES:
        raise StrategyError(f"strategy must be one of {', '.join(STRATEGIES)}, not {name!r}")
    tf, _ = import_tf()
    if name == "default":
        return Placement(tf.distribute.get_strategy(), name, 1, 1, 0, True)
    cpus = _logical_cpus()
    if cpus and not tf.config.list_physical_devices("GPU"):
        _split_cpu(tf, cpus)
    if name == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]
        strategy = tf.distribute.MirroredStrategy(devices)
        return Placement(strategy, name, strategy.num_replicas_in_sync, 1, 0, True)
    conf = tf_config()
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    cluster, task = conf["cluster"], conf["task"]
    has_chief = "chief" in cluster
    workers = len(cluster.get("worker", [])) + (1 if has_chief else 0)
    if task["type"] == "chief":
        worker = 0
    else:
        worker = int(task["index"]) + (1 if has_chief else 0)
    return Placement(strategy, name, strategy.num_replicas_in_sync, workers, worker, worker == 0)
