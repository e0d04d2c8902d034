"""Two-process (gloo, CPU) data-parallel training and sharded sampling, launched with torchrun."""

import os
import subprocess
import sys

import numpy as np
import torch

from fastsde import checkpoint
from fastsde.models import create_model

from tiny import perturb, tiny_config

HERE = os.path.dirname(os.path.abspath(__file__))


def torchrun(*args, timeout=300, rc=0):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": HERE}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *map(str, args)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    assert proc.returncode == rc, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def test_two_process_training_keeps_ranks_in_step(tmp_path):
    out = torchrun(os.path.join(HERE, "dist_worker.py"), tmp_path / "w", 4)
    assert "rank 0: weights agree at step 4, stopped by None" in out and "rank 1: weights agree at step 4" in out
    state = checkpoint.read(tmp_path / "w" / "checkpoints-meta" / "checkpoint.pth")
    rng = state["fastsde"]["rng"]
    assert state["step"] == 4 and len(rng) == 2  # both ranks' RNG states, for resume
    assert not torch.equal(rng[0], rng[1])  # each rank draws its own noise
    assert sorted(os.listdir(tmp_path / "w" / "checkpoints")) == ["checkpoint_1.pth"]  # rank 0 wrote it once


def test_a_signal_to_one_rank_stops_every_rank_at_the_same_step(tmp_path):
    # A scheduler's SIGTERM reaches the processes at different times: all stop after the same step and save it.
    out = torchrun(os.path.join(HERE, "dist_worker.py"), tmp_path / "w", 100, 3, timeout=120)
    assert "rank 0: weights agree at step 3, stopped by SIGTERM" in out  # rank 0 reports it
    assert "rank 1: weights agree at step 3, stopped by SIGTERM" in out and "SIGTERM: saved step 3 to" in out
    assert checkpoint.read(tmp_path / "w" / "checkpoints-meta" / "checkpoint.pth")["step"] == 3


def test_sharded_sampling_matches_one_process(tmp_path):
    torch.manual_seed(0)
    config = tiny_config()
    model = perturb(create_model(config))
    checkpoint.save_safetensors(tmp_path / "m.safetensors", model, config)
    common = ["sample", "--ckpt", tmp_path / "m.safetensors", "--num-samples", 7, "--steps", 30]
    torchrun("-m", "fastsde", *common, "--batch-size", 2, "--out", tmp_path / "two")
    subprocess.run(
        [sys.executable, "-m", "fastsde", *map(str, common), "--batch-size", "7", "--out", str(tmp_path / "one")],
        check=True,
        capture_output=True,
        timeout=300,
    )
    with np.load(tmp_path / "one" / "samples.npz") as a, np.load(tmp_path / "two" / "samples.npz") as b:
        assert a["samples"].shape == (7, 8, 8, 1) and np.array_equal(a["samples"], b["samples"])
    # The parts merged:
    assert sorted(os.listdir(tmp_path / "two")) == [".samples.lock", "samples.json", "samples.npz", "samples.png"]
    # Another run into the folder: every process stops with rank 0's reason (none hangs at a barrier).
    err = torchrun("-m", "fastsde", *common, "--seed", 1, "--out", tmp_path / "two", rc=1, timeout=120)
    assert "seed: 0 there, 1 here" in err and "rank 0 refused to go on" in err


def test_sharded_likelihood_matches_one_process(tmp_path):
    torch.manual_seed(0)
    config = tiny_config()
    checkpoint.save_safetensors(tmp_path / "m.safetensors", perturb(create_model(config)), config)
    common = [
        "likelihood",
        "--ckpt",
        tmp_path / "m.safetensors",
        "--num-samples",
        5,
        "--batch-size",
        2,
        "--repeats",
        2,
        "--tol",
        1e-3,
    ]
    out = torchrun("-m", "fastsde", *common, "--out", tmp_path / "two")
    assert "over 5 images x 2 repeats" in out
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # as under torchrun: the same sums in the same order
    subprocess.run(
        [sys.executable, "-m", "fastsde", *map(str, common), "--out", str(tmp_path / "one")],
        check=True,
        capture_output=True,
        timeout=300,
        env=env,
    )
    with np.load(tmp_path / "one" / "bpd.npz") as a, np.load(tmp_path / "two" / "bpd.npz") as b:
        assert a["bpd"].shape == (10,) and np.isfinite(a["bpd"]).all()
        np.testing.assert_allclose(b["bpd"], a["bpd"], rtol=1e-6)
    assert sorted(os.listdir(tmp_path / "two")) == [".bpd.lock", "bpd.json", "bpd.npz"]
    err = torchrun("-m", "fastsde", *common, rc=1, timeout=120)
    assert "likelihood under torchrun needs --out" in err
