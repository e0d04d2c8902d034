"""The training loop: it learns, resumes exactly, stops cleanly on a signal, survives a hard kill,
and writes checkpoints that load in fastsde and have the official layout."""

import importlib.util
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from fastsde import checkpoint, losses, train
from fastsde.checkpoint import load_checkpoint, sde_from_config

from conftest import FIXTURES
from tiny import tiny_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _meta(workdir):
    return checkpoint.read(os.path.join(workdir, "checkpoints-meta", "checkpoint.pth"))


def _official_fixtures():
    # tests/fixtures/make_official_fixtures.py: how it changed the configs and fingerprinted the weights.
    spec = importlib.util.spec_from_file_location(
        "make_official_fixtures", os.path.join(FIXTURES, "make_official_fixtures.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


OFFICIAL = torch.load(os.path.join(FIXTURES, "official_training.pt"), weights_only=True)


@pytest.mark.parametrize("name", list(OFFICIAL))
def test_training_steps_are_the_official_ones(name):
    # The official step_fn's losses and weights from the same checkpoint, batch and seed: the loss (the
    # DSM objective of each SDE, SMLD, DDPM), its gradients, warmup, clipping, Adam and the EMA.
    e = OFFICIAL[name]
    path = os.path.join(FIXTURES, e["fixture"])
    model, _, config = load_checkpoint(path + ".pth", path + ".json", use_ema=False)
    ema = losses.EMA(model.parameters(), config.model.ema_rate)
    ema.load_state_dict(checkpoint.read(path + ".pth")["ema"])
    official = _official_fixtures()
    official.changed(config, {"optim.warmup": 2, **e["changes"]})  # as the official steps ran
    o = config.optim
    opt = losses.optimizer(model.parameters(), lr=o.lr, beta1=o.beta1, eps=o.eps, weight_decay=o.weight_decay)
    loss_of = train.objective(config, sde_from_config(config))
    torch.manual_seed(e["seed"])
    got = [train.train_step(model, opt, ema, loss_of, e["batch"], step, o).item() for step in range(len(e["losses"]))]
    torch.testing.assert_close(torch.tensor(got), torch.tensor(e["losses"]), rtol=1e-5, atol=0)
    # The trainable weights, per tensor, in units of one step of size lr on each element. A few tensors
    # have an exact gradient of zero (a bias under a per-channel normalisation, attention's key bias):
    # rounding noise there, which Adam scales to steps of up to lr of either sign (measured: 0.25 in the
    # DDPM network, whose GroupNorm has one channel a group, 3e-3 elsewhere); most tensors agree to 1e-5.
    named = [(k, p) for k, p in model.named_parameters() if p.requires_grad]
    step_size = torch.tensor([o.lr * p.numel() ** 0.5 for _, p in named], dtype=torch.float64)
    for kind, tensors in [("model", named), ("ema", list(zip((k for k, _ in named), ema.shadow_params)))]:
        steps = (official.fingerprint(tensors) - e[kind]).abs() / step_size
        assert steps.median() < 1e-3 and steps.max() < 1, (kind, steps.median().item(), steps.max().item())


def test_training_lowers_the_loss(tmp_path):
    c = tiny_config(log_freq=10)
    c.optim.lr, c.optim.warmup = 2e-3, 5
    logged = []
    result = train.train(c, str(tmp_path), n_iters=60, log=logged.append)
    losses = [float(line.split("loss ")[1].split()[0]) for line in logged]
    assert result["step"] == 60 and len(losses) == 6
    assert losses[-1] < 0.6 * losses[0], losses


def test_resume_continues_the_same_run(tmp_path):
    c = tiny_config()
    straight = train.train(c, str(tmp_path / "a"), n_iters=6, log=lambda s: None)
    train.train(c, str(tmp_path / "b"), n_iters=3, log=lambda s: None)
    resumed = train.train(c, str(tmp_path / "b"), n_iters=6, log=lambda s: None)
    a, b = _meta(tmp_path / "a"), _meta(tmp_path / "b")
    assert a["step"] == b["step"] == 6 and straight["loss"] == resumed["loss"]
    assert a["ema"]["num_updates"] == b["ema"]["num_updates"] == 6
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    for x, y in zip(a["ema"]["shadow_params"], b["ema"]["shadow_params"]):
        assert torch.equal(x, y)
    assert a["optimizer"]["state"][0]["step"] == b["optimizer"]["state"][0]["step"]
    # The last step is saved too, under step // snapshot_freq as upstream (6 // 4: over step 4's).
    assert checkpoint.read(tmp_path / "a" / "checkpoints" / "checkpoint_1.pth")["step"] == 6


@pytest.mark.parametrize(
    "log_freq,error", [(2, "training loss is nan at step 4"), (100, "the weights are not finite at step 4")]
)
def test_a_diverging_run_stops_and_keeps_its_last_finite_snapshot(tmp_path, monkeypatch, log_freq, error):
    objective, calls = train.objective, [0]

    def diverging(config, sde):  # the loss NaN from step 3 on, hence the weights
        loss = objective(config, sde)

        def fn(model, x):
            calls[0] += 1
            return loss(model, x) * (float("nan") if calls[0] >= 3 else 1.0)

        return fn

    monkeypatch.setattr(train, "objective", diverging)
    with pytest.raises(FloatingPointError, match=error):
        train.train(tiny_config(log_freq=log_freq), str(tmp_path), n_iters=10, log=lambda s: None)
    meta = _meta(tmp_path)
    assert meta["step"] == 2 and all(torch.isfinite(v).all() for v in meta["model"].values())


def test_checkpoints_have_the_official_layout_and_load(tmp_path):
    train.train(tiny_config(), str(tmp_path), n_iters=8, log=lambda s: None)
    names = sorted(os.listdir(tmp_path / "checkpoints"))
    assert names == ["checkpoint_1.pth", "checkpoint_2.pth"]  # step // snapshot_freq, as upstream
    state = checkpoint.read(tmp_path / "checkpoints" / "checkpoint_2.pth")
    assert {"optimizer", "model", "ema", "step"} <= set(state) and state["step"] == 8
    assert all(k.startswith("module.") for k in state["model"])
    assert set(state["ema"]) == {"decay", "num_updates", "shadow_params"}
    model, sde, config = checkpoint.load_checkpoint(
        tmp_path / "checkpoints" / "checkpoint_2.pth", str(tmp_path / "config.json")
    )
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert all(torch.equal(p, s) for p, s in zip(trainable, state["ema"]["shadow_params"]))
    assert config.model.nf == 16 and sde.N == 25


def test_bf16_and_discrete_objectives_train(tmp_path):
    train.train(tiny_config(), str(tmp_path / "bf16"), n_iters=2, precision="bf16", log=lambda s: None)
    for sde_name in ("vesde", "vpsde"):
        c = tiny_config(continuous=False, sde=sde_name)
        c.model.scale_by_sigma = sde_name == "vesde"
        r = train.train(c, str(tmp_path / sde_name), n_iters=2, log=lambda s: None)
        assert r["step"] == 2 and torch.isfinite(torch.tensor(r["loss"]))
    c = tiny_config(continuous=False, sde="subvpsde")
    with pytest.raises(ValueError, match="not sub-VP"):
        train.train(c, str(tmp_path / "subvp"), n_iters=1)
    with pytest.raises(ValueError, match="precision"):
        train.train(tiny_config(), str(tmp_path / "x"), n_iters=1, precision="fp16")


def _start(workdir, steps, config_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fastsde",
            "train",
            "--config",
            str(config_path),
            "--workdir",
            str(workdir),
            "--steps",
            str(steps),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=ROOT,
    )


def _wait_for_step(proc, step, timeout=120):
    deadline = time.time() + timeout
    for line in proc.stdout:
        if line.startswith(f"step {step} ") or time.time() > deadline:
            return
    pytest.fail(f"the trainer ended before step {step}")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_saves_and_exits_cleanly(tmp_path, sig):
    config_path = tmp_path / "tiny.json"
    config_path.write_text(__import__("json").dumps(tiny_config(snapshot_freq_for_preemption=1000)))
    proc = _start(tmp_path / "w", 100000, config_path)
    _wait_for_step(proc, 4)
    # A second trainer on the workdir is refused while the first runs.
    with pytest.raises(ValueError, match=rf"w is in use: another process \(pid {proc.pid}\) is writing its train"):
        train.train(config_path, str(tmp_path / "w"), n_iters=8)
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig, out  # a stopped run is not a finished one, for `train && sample`
    assert f"{sig.name}: saved step" in out and "stopped by" in out
    saved = _meta(tmp_path / "w")["step"]
    assert saved >= 4 and f"saved step {saved} " in out  # every step it took is in the snapshot


def test_a_run_resumes_only_with_its_own_config(tmp_path, capsys):
    from fastsde import cli

    config = tiny_config(snapshot_freq_for_preemption=2)
    config_path = tmp_path / "tiny.json"
    config_path.write_text(__import__("json").dumps(config))
    workdir = str(tmp_path / "w")
    assert cli.main(["train", "--config", str(config_path), "--workdir", workdir, "--steps", "2"]) == 0
    assert cli.main(["train", "--workdir", workdir, "--steps", "4", "--batch-size", "8"]) == 1
    assert (
        f"w holds a run of another config (training.batch_size: {config.training.batch_size} there, 8 here): "
        "resume it with its own"
    ) in capsys.readouterr().err
    # Without --config, the workdir's own config resumes it.
    assert cli.main(["train", "--workdir", workdir, "--steps", "4"]) == 0
    assert "resumed from" in capsys.readouterr().out and _meta(tmp_path / "w")["step"] == 4


def test_hard_kill_resumes_from_the_last_snapshot(tmp_path):
    config_path = tmp_path / "tiny.json"
    config_path.write_text(__import__("json").dumps(tiny_config(snapshot_freq_for_preemption=3)))
    proc = _start(tmp_path / "w", 100000, config_path)
    _wait_for_step(proc, 8)
    proc.kill()
    proc.communicate(timeout=60)
    snapshot = _meta(tmp_path / "w")["step"]
    assert snapshot >= 6 and snapshot % 3 == 0  # lost at most the steps since the last snapshot
    logged = []
    result = train.train(config_path, str(tmp_path / "w"), n_iters=snapshot + 2, log=logged.append)
    assert logged[0].startswith("resumed from") and f"at step {snapshot}" in logged[0]
    assert result["step"] == snapshot + 2 and _meta(tmp_path / "w")["ema"]["num_updates"] == snapshot + 2
