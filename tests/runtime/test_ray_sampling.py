"""Sampling on Ray (cxr_runtime.ray_sampling): byte-identical to the local sampler for any
number of workers and shard size, resumable after the driver dies, a dead worker's shard
redone, Parquet output, and a two-node cluster on loopback."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from cxr_runtime import Generator, sampling
from cxr_runtime.cli import main
from cxr_runtime.errors import LabelError

from .onnx_models import tiny_generator

if os.environ.get("CI") != "true":
    pytest.importorskip("ray")
import ray  # noqa: E402

from cxr_runtime import ray_sampling  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
N = 30


def _same_files(a: Path, b: Path, pattern: str = "sample-*") -> int:
    names = sorted(p.name for p in a.glob(pattern))
    assert names == sorted(p.name for p in b.glob(pattern))
    for name in names:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    return len(names)


def _clean(folder: Path, manifest: str = "manifest.json") -> None:
    """A finished set: no marker, no shard records, no temporary file."""
    assert (folder / manifest).is_file() and not (folder / ".sampling.json").exists()
    assert not (folder / ray_sampling.SHARDS).exists()
    assert not [p for p in folder.iterdir() if ".tmp-" in p.name]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ray")
    m = tiny_generator(tmp / "g.onnx", size=32, metadata={"exported": "2026-11-26T21:04:55+0000"})
    gen = Generator(m, device="cpu")
    local = {}
    for fmt in ("png", "npy", "dicom"):
        local[fmt] = tmp / f"local-{fmt}"
        sampling.sample_to_folder(gen, local[fmt], N, seed=4, fmt=fmt, batch_size=4)
    return m, local


@pytest.fixture(scope="module")
def local_ray(tmp_path_factory):
    """One Ray instance for the module, started by the test itself on this machine."""
    flag = tmp_path_factory.mktemp("flags") / "die-once"
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR",
             runtime_env={"env_vars": {"PYTHONPATH": str(ROOT), "CXR_TEST_DIE_ONCE": str(flag)}})
    os.environ["CXR_TEST_DIE_ONCE"] = str(flag)
    yield flag
    ray.shutdown()


@pytest.mark.parametrize("fmt, workers, shard", [("png", 1, None), ("png", 2, 7), ("png", 2, 1), ("npy", 2, 4),
                                                 ("dicom", 2, 11)])
def test_byte_identical_to_the_local_sampler(model, local_ray, tmp_path, fmt, workers, shard):
    m, local = model
    out = tmp_path / "ray"
    seen = []
    r = ray_sampling.sample(m, out, N, seed=4, fmt=fmt, workers=workers, shard_size=shard,
                           progress=lambda done, n: seen.append(done))
    assert (r.count, r.written) == (N, N) and seen[-1] == N and seen == sorted(seen)
    assert _same_files(local[fmt], out) == N
    _clean(out)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["engine"] == "ray" and manifest["count"] == N and manifest["ray"]["workers"] == workers
    assert manifest["model_sha256"] == json.loads((local[fmt] / "manifest.json").read_text())["model_sha256"]
    again = ray_sampling.sample(m, out, N, seed=4, fmt=fmt, workers=workers)
    assert again.written == 0  # a complete set is left as it is


def test_the_latent_scale_reaches_the_workers(model, local_ray, tmp_path):
    """Given by the caller or recorded in the model, Ray's files are the local sampler's at that scale."""
    m, _ = model
    local = tmp_path / "local"
    sampling.sample_to_folder(Generator(m, device="cpu", latent_scale=1.3), local, N, seed=4, batch_size=4)
    ray_sampling.sample(m, tmp_path / "ray", N, seed=4, workers=2, shard_size=8, latent_scale=1.3)
    assert _same_files(local, tmp_path / "ray") == N
    assert json.loads((tmp_path / "ray" / "manifest.json").read_text())["latent_scale"] == 1.3
    scaled = tiny_generator(tmp_path / "scaled.onnx", size=32, metadata={"latent_scale": "1.3"})
    ray_sampling.sample(scaled, tmp_path / "ray-metadata", N, seed=4, workers=2, shard_size=8)
    assert _same_files(local, tmp_path / "ray-metadata") == N


def test_parquet_rows_hold_the_png_files(model, local_ray, tmp_path):
    import pyarrow.parquet as pq

    m, local = model
    out = tmp_path / "pq"
    ray_sampling.sample(m, out, N, seed=4, fmt="parquet", workers=2, shard_size=8)
    parts = sorted(out.glob("part-*.parquet"))
    assert len(parts) == 4 and parts[0].name == "part-000000000000-000000000008.parquet"
    table = pq.read_table(out)  # the folder is one data set
    rows = table.sort_by("index").to_pydict()
    assert rows["index"] == list(range(N)) and set(rows["seed"]) == {4}
    assert set(rows["model_sha256"]) == {Generator(m, device="cpu").sha256}
    for i, png in enumerate(rows["png"]):
        assert png == (local["png"] / sampling.file_name(i, N, "png")).read_bytes()
    _clean(out, "_manifest.json")
    assert json.loads((out / "_manifest.json").read_text())["format"] == "parquet"


def test_a_dead_worker_shard_is_redone(model, local_ray, tmp_path):
    from .ray_helpers import DiesOnce

    local_ray.write_text("die")  # the first shard's actor writes one image and kills its process
    m, local = model
    out = tmp_path / "ray"
    ray_sampling.sample(m, out, N, seed=4, workers=2, shard_size=5, writer_cls=DiesOnce)
    assert not local_ray.exists()  # the worker did die
    assert _same_files(local["png"], out) == N
    _clean(out)


def test_an_error_in_the_writer_stops_the_job_with_its_message(model, local_ray, tmp_path):
    from .ray_helpers import Fails

    m, _ = model
    t0 = time.time()
    with pytest.raises(ray_sampling.DistributedError, match="No space left on device"):
        ray_sampling.sample(m, tmp_path / "ray", N, seed=4, workers=1, shard_size=10, writer_cls=Fails)
    assert time.time() - t0 < 120  # not retried forever
    assert not (tmp_path / "ray" / "manifest.json").exists()


def test_cli_engine_ray_and_usage_errors(model, local_ray, tmp_path):
    m, local = model
    r = CliRunner().invoke(main, ["sample", "--n", str(N), "--seed", "4", "--model", str(m), "--out",
                                  str(tmp_path / "c"), "--engine", "ray", "--workers", "2"])
    assert r.exit_code == 0, r.output
    assert "on Ray, 2 workers" in r.output and _same_files(local["png"], tmp_path / "c") == N
    r = CliRunner().invoke(main, ["sample", "--n", "3", "--model", str(m), "--out", str(tmp_path / "d"),
                                  "--format", "parquet"])
    assert r.exit_code == 2 and "need --engine ray" in r.output


def _kill_processes_mentioning(text: str) -> None:
    """SIGKILL every process whose command line names `text` (a killed driver's Ray daemons)."""
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if text in cmdline.read_bytes().decode(errors="replace"):
                os.kill(int(cmdline.parent.name), signal.SIGKILL)
        except (OSError, ValueError):
            continue


def test_a_killed_driver_resumes_where_it_stopped(model, tmp_path):
    """Kill the driver (SIGKILL, with its local Ray) once some shards are done; the same call
    again skips them and completes the set with the local sampler's bytes. Both calls run in
    processes of their own, each with its own Ray."""
    m, local = model
    out = tmp_path / "ray"
    # this driver's Ray files, under a short path (Ray's socket paths must stay short): its
    # daemons are found, and killed, by this path
    ray_tmp = Path(tempfile.mkdtemp(prefix="cxr-rt-", dir="/tmp"))

    def driver(workers: int, shard: int) -> subprocess.Popen:
        code = (f"import sys; sys.path.insert(0, {str(ROOT)!r})\n"
                "from cxr_runtime import ray_sampling\n"
                f"r = ray_sampling.sample({str(m)!r}, {str(out)!r}, 120, seed=4, workers={workers}, shard_size={shard})\n"
                "print(r.resumed_from, r.written)\n")
        return subprocess.Popen([sys.executable, "-c", code], start_new_session=True, stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, text=True,
                                env={**os.environ, "RAY_TMPDIR": str(ray_tmp)})

    first = driver(1, 3)
    deadline = time.time() + 240
    while time.time() < deadline and len(list((out / ray_sampling.SHARDS).glob("*.done"))) < 3:
        time.sleep(0.2)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    _kill_processes_mentioning(str(ray_tmp))
    done = len(list((out / ray_sampling.SHARDS).glob("*.done")))
    assert 3 <= done < 40 and not (out / "manifest.json").exists()

    second = driver(2, 7)
    resumed_from, written = (int(x) for x in second.communicate(timeout=600)[0].split())
    assert second.returncode == 0 and resumed_from >= 3 * done and resumed_from + written == 120
    full = tmp_path / "local"
    sampling.sample_to_folder(Generator(m, device="cpu"), full, 120, seed=4)
    assert _same_files(full, out) == 120
    _clean(out)
    _kill_processes_mentioning(str(ray_tmp))
    shutil.rmtree(ray_tmp, ignore_errors=True)


def test_two_node_cluster_on_loopback(model, tmp_path):
    """A head node without CPUs (the driver's) and a second node (two raylets on this machine)
    with two: both actors must run on the other node, so the set is written by a remote node,
    and it is the local one."""
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    try:
        cluster.add_node(num_cpus=2)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, log_to_driver=False, logging_level="ERROR")
        assert len([n for n in ray.nodes() if n["Alive"]]) == 2
        m, local = model
        out = tmp_path / "ray"
        ray_sampling.sample(m, out, N, seed=4, workers=2, shard_size=3)
        assert _same_files(local["png"], out) == N
        nodes = json.loads((out / "manifest.json").read_text())["ray"]["nodes"]
        head_id = ray.get_runtime_context().get_node_id()  # the driver's node
        assert len(nodes) == 1 and not nodes[0].endswith(head_id[:12])  # every shard from the other node
    finally:
        ray.shutdown()
        cluster.shutdown()


def test_plan_shards_covers_what_is_left():
    assert ray_sampling.plan_shards(10, 4) == [(0, 4), (4, 8), (8, 10)]
    assert ray_sampling.plan_shards(10, 4, [(0, 4), (6, 8)]) == [(4, 6), (8, 10)]
    assert ray_sampling.plan_shards(5, 10, [(0, 5)]) == []
    assert ray_sampling.default_shard_size(100_000, 8) == ray_sampling.MAX_SHARD
    assert ray_sampling.default_shard_size(30, 2) == 4


def test_base_runtime_never_imports_ray(tmp_path):
    code = (f"import sys; sys.path.insert(0, {str(ROOT)!r}); sys.modules['ray'] = None\n"
            "from click.testing import CliRunner\n"
            "from cxr_runtime.cli import main\n"
            "from tests.runtime.onnx_models import tiny_generator\n"
            f"m = tiny_generator({str(tmp_path / 'g.onnx')!r})\n"
            f"r = CliRunner().invoke(main, ['sample', '--n', '3', '--model', str(m), '--out', {str(tmp_path / 's')!r}])\n"
            "assert r.exit_code == 0, r.output\n"
            f"r = CliRunner().invoke(main, ['sample', '--n', '3', '--model', str(m), '--out', {str(tmp_path / 't')!r},"
            " '--engine', 'ray'])\n"
            "assert r.exit_code == 2 and \"pip install 'cxr-gan[ray]'\" in r.output, r.output\n"
            "print('ok')\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stderr[-2000:]


def test_the_gpu_rule_on_ray():
    """cuda: a GPU per worker; auto: a GPU per worker when the cluster has one, else none; cpu:
    none; a GPU number is refused (Ray narrows each actor's CUDA_VISIBLE_DEVICES to its own GPU,
    so cuda:1 would name a device the actor cannot see)."""
    assert ray_sampling.gpus_per_worker("cuda", {"CPU": 8}) == 1
    assert ray_sampling.gpus_per_worker("auto", {"CPU": 8, "GPU": 2.0}) == 1
    assert ray_sampling.gpus_per_worker("auto", {"CPU": 8}) == 0
    assert ray_sampling.gpus_per_worker("cpu", {"CPU": 8, "GPU": 2.0}) == 0


def test_a_gpu_number_is_refused_before_ray_starts(model, tmp_path):
    m, _ = model
    with pytest.raises(ray_sampling.DistributedError, match="a GPU number cannot be chosen"):
        ray_sampling.sample(m, tmp_path / "x", 3, device="cuda:1")
    r = CliRunner().invoke(main, ["sample", "--n", "3", "--model", str(m), "--out", str(tmp_path / "y"),
                                  "--engine", "ray", "--device", "cuda:1"])
    assert r.exit_code == 2 and "a GPU number cannot be chosen" in r.output and not (tmp_path / "y").exists()


def test_auto_reserves_a_gpu_per_worker_on_a_cluster_with_gpus(model, tmp_path):
    """A local Ray that declares two (fake) GPUs: the default device (auto) reserves one per
    worker, Ray hands each actor its own, and the files are still the local sampler's bytes
    (this CPU build of onnxruntime falls back to the CPU inside the actor)."""
    m, local = model
    out = tmp_path / "ray"
    code = (f"import ray, json\n"
            "ray.init(num_cpus=2, num_gpus=2, include_dashboard=False, log_to_driver=False, logging_level='ERROR')\n"
            "from cxr_runtime import ray_sampling\n"
            f"ray_sampling.sample({str(m)!r}, {str(out)!r}, {N}, seed=4, workers=2, shard_size=4, device='auto')\n"
            "ray.shutdown()\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["ray"]["gpus_per_worker"] == 1 and manifest["device"] == "auto"
    assert set(manifest["ray"]["gpu_ids"]) <= {"0", "1"} and manifest["ray"]["gpu_ids"]
    assert manifest["providers"] == ["CPUExecutionProvider"]
    assert _same_files(local["png"], out) == N


def test_a_labelled_model_on_ray_writes_the_local_files_of_each_class(local_ray, tmp_path):
    """--classes with --engine ray: OUT/CLASS/ per class, each byte for byte the local engine's set
    of that class (any shard size), the class in the manifest; a bad class fails before anything is
    written, a labelled model without a class fails with its one line."""
    m = tiny_generator(tmp_path / "labelled.onnx", size=32, classes=("NORMAL", "PNEUMONIA"))
    gen = Generator(m, device="cpu")
    for name in gen.classes:
        sampling.sample_to_folder(gen, tmp_path / "local" / name, 12, seed=2, batch_size=5, label=name)
    r = CliRunner().invoke(main, ["sample", "--model", str(m), "--out", str(tmp_path / "ray"), "--seed", "2",
                                  "--engine", "ray", "--workers", "2", "--shard-size", "5",
                                  "--classes", "NORMAL=12,PNEUMONIA=12"])
    assert r.exit_code == 0, r.output
    for name in gen.classes:
        assert _same_files(tmp_path / "local" / name, tmp_path / "ray" / name) == 12
        manifest = json.loads((tmp_path / "ray" / name / "manifest.json").read_text())
        assert manifest["class"] == name and manifest["engine"] == "ray"
    a, b = (tmp_path / "ray" / c / "sample-000000.png" for c in gen.classes)  # the classes' images differ
    assert a.read_bytes() != b.read_bytes()
    r = CliRunner().invoke(main, ["sample", "--model", str(m), "--out", str(tmp_path / "bad"), "--engine", "ray",
                                  "--classes", "NORMAL=4,COVID=4"])
    assert r.exit_code != 0 and "COVID" in r.output and not (tmp_path / "bad").exists()
    with pytest.raises(LabelError, match="labelled model"):
        ray_sampling.sample(m, tmp_path / "none", 4, workers=1)
    assert not (tmp_path / "none").exists()
