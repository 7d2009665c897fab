"""tf.distribute: MirroredStrategy and MultiWorkerMirroredStrategy compute what one device computes.

Each run is its own process (distributed_driver.py): splitting the CPU into logical
devices or joining a cluster has to happen before TensorFlow starts. Dropout is off in
these runs (replicas draw their own masks); everything else is the smoke config.
Observed differences to the default strategy are ~1.5e-8 in the weights and none in the
epoch losses; the tolerance is 1e-6. A loss reduced twice by the number of replicas (a
bug this suite caught) moved the weights by 6e-4 after six steps.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cxr_training import distribute

DRIVER = Path(__file__).with_name("distributed_driver.py")
TOL = 1e-6


def _run(out: Path, data: Path, strategy: str, *extra: str, env=None, check=True):
    proc = subprocess.run([sys.executable, str(DRIVER), str(out), str(data), strategy, *extra],
                          env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"{strategy} run failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return proc


def _result(out: Path) -> dict:
    with np.load(out / "result.npz") as r:
        return {k: r[k] for k in r.files}


def _assert_same(a: dict, b: dict):
    assert a.keys() == b.keys() and int(a["step"]) == int(b["step"]) == 6
    np.testing.assert_allclose(a["losses"], b["losses"], rtol=0, atol=TOL)
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=0, atol=TOL, err_msg=k)


@pytest.fixture(scope="module")
def data(tmp_path_factory, train_normal):
    folder = tmp_path_factory.mktemp("few")
    for p in sorted(train_normal.iterdir())[:8]:
        (folder / p.name).symlink_to(p)
    return folder


@pytest.fixture(scope="module")
def single(tmp_path_factory, data):
    out = tmp_path_factory.mktemp("default")
    _run(out, data, "default")
    return _result(out)


def test_mirrored_two_logical_cpus_equals_default(single, data, tmp_path):
    proc = _run(tmp_path, data, "mirrored", env={"CXR_LOGICAL_CPUS": "2"})
    assert "mirrored strategy, 2 replicas" in proc.stdout
    _assert_same(single, _result(tmp_path))


def test_mirrored_recipe_equals_default(data, tmp_path):
    """The recipe's shared state under two replicas: augmentation drawn per global row, ADA's
    sign sums all-reduced, the EMA updated from the synchronised weights, R1 per replica, LeCam's
    moving averages of the global batch's mean logits."""
    _run(tmp_path / "one", data, "default", "--recipe")
    proc = _run(tmp_path / "two", data, "mirrored", "--recipe", env={"CXR_LOGICAL_CPUS": "2"})
    assert "mirrored strategy, 2 replicas" in proc.stdout
    one, two = _result(tmp_path / "one"), _result(tmp_path / "two")
    assert any(k.startswith("ema/") for k in one) and any(k.startswith("augment/") for k in one)
    assert len([k for k in one if k.startswith("lecam/")]) == 2
    _assert_same(one, two)


def test_mirrored_resume_equals_straight(single, data, tmp_path):
    env = {"CXR_LOGICAL_CPUS": "2"}
    proc = _run(tmp_path, data, "mirrored", "--interrupt-at", "1,1", env=env, check=False)
    assert proc.returncode == 3, proc.stderr[-2000:]  # stopped inside epoch 2, after epoch 1's checkpoint
    run = next((tmp_path / "runs").iterdir())
    assert not (tmp_path / "result.npz").exists()
    proc = _run(tmp_path, data, "mirrored", "--resume", str(run), env=env)
    assert "resuming from epoch-0001 (step 3)" in proc.stdout
    _assert_same(single, _result(tmp_path))


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def test_multiworker_two_processes_on_loopback(single, data, tmp_path):
    hosts = [f"127.0.0.1:{p}" for p in _free_ports(2)]
    procs = []
    for i in range(2):
        conf = {"cluster": {"worker": hosts}, "task": {"type": "worker", "index": i}}
        scratch = tmp_path / f"tmp{i}"
        scratch.mkdir()
        env = {**os.environ, "TF_CONFIG": json.dumps(conf), "TMPDIR": str(scratch)}
        procs.append(subprocess.Popen([sys.executable, str(DRIVER), str(tmp_path / f"w{i}"), str(data), "multiworker"],
                                      env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outs = []
    for p in procs:
        try:
            outs.append(p.communicate(timeout=300))
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, f"{out[-2000:]}\n{err[-4000:]}"
    assert "multiworker strategy, 2 replicas, worker 0 of 2" in outs[0][0]
    # the chief wrote the run; the other worker's scratch run folder is gone
    assert (tmp_path / "w0" / "result.npz").is_file() and (tmp_path / "w1" / "worker-done.txt").is_file()
    assert not (tmp_path / "w1" / "runs").exists() and list((tmp_path / "tmp1").iterdir()) == []
    _assert_same(single, _result(tmp_path / "w0"))


def test_tf_config_is_checked(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(distribute.StrategyError, match="needs TF_CONFIG"):
        distribute.tf_config()
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(distribute.StrategyError, match="not valid JSON"):
        distribute.tf_config()
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 3}}))
    with pytest.raises(distribute.StrategyError, match="outside"):
        distribute.tf_config()
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"ps": ["a:1"]}, "task": {"type": "ps", "index": 0}}))
    with pytest.raises(distribute.StrategyError, match="chief or worker"):
        distribute.tf_config()
    with pytest.raises(distribute.StrategyError, match="strategy must be"):
        distribute.make("horovod")
