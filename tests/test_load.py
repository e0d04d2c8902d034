"""fastsde.load, the front door: every source it reads, diffusers' NCSN++ against diffusers itself, the
conversions both ways, and the ScoreModel's methods."""

import json
import math
import os
import shutil

import diffusers  # noqa: E402  (a test extra, never a runtime dependency)
import numpy as np
import pytest
import torch

import fastsde
from fastsde import checkpoint, configs, diffusers_format, score_model
from fastsde.checkpoint import CheckpointError
from fastsde.models import create_model

from conftest import FIXTURES

# (block_out_channels, attention per level, layers_per_block, center_input_sample): diffusers computes the
# official network where attention levels have at least 128 channels (docs/checkpoints.md).
UNETS = [
    ((32, 64), (False, False), 1, True),
    ((32, 64, 128), (False, False, True), 1, False),
    ((32, 128), (False, True), 2, True),
]


def make_unet(channels, attention, layers, center, seed=0):
    torch.manual_seed(seed)
    unet = diffusers.UNet2DModel(
        sample_size=16,
        in_channels=3,
        out_channels=3,
        center_input_sample=center,
        time_embedding_type="fourier",
        down_block_types=[("AttnSkipDownBlock2D" if a else "SkipDownBlock2D") for a in attention],
        up_block_types=[("AttnSkipUpBlock2D" if a else "SkipUpBlock2D") for a in reversed(attention)],
        block_out_channels=channels,
        layers_per_block=layers,
        mid_block_scale_factor=math.sqrt(2),
        norm_eps=1e-6,
        norm_num_groups=None,
        attention_head_dim=None,
        act_fn="silu",
        downsample_padding=1,
        flip_sin_to_cos=True,
        freq_shift=1,
    ).eval()
    with torch.no_grad():
        for p in unet.parameters():  # random everywhere: diffusers zero-initialises nothing we could miss
            p.normal_(0, 0.1)
    return unet


def rename_to_old_attention(folder):
    from safetensors.torch import load_file, save_file

    path = os.path.join(folder, "diffusion_pytorch_model.safetensors")
    old = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}
    state = load_file(path)
    renamed = {}
    for k, v in state.items():
        for new, was in old.items():
            k = k.replace(f".{new}.", f".{was}.")
        renamed[k] = v
    assert renamed.keys() != state.keys()
    save_file(renamed, path)


LAYOUTS = [
    (u, layout)
    for u in UNETS
    for layout in ("safetensors", "bin", "old-attention-names")
    if any(u[1]) or layout != "old-attention-names"
]  # old names: models with attention


@pytest.mark.parametrize("unet_args,layout", LAYOUTS, ids=[f"{u[0]}-{layout}" for u, layout in LAYOUTS])
def test_diffusers_model_gives_diffusers_score(tmp_path, unet_args, layout):
    unet = make_unet(*unet_args)
    unet.save_pretrained(tmp_path, safe_serialization=layout != "bin")
    if layout == "old-attention-names":
        rename_to_old_attention(tmp_path)
    m = fastsde.load(tmp_path, device="cpu")
    x = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([0.05, 0.5, 1.0])
    sigma = m.sde.marginal_coef(t)[1]
    with torch.no_grad():
        want = unet(x, sigma).sample
        got = m.model(x, sigma)
        fast = m.score_fn(x, t)  # folded, channels_last
    scale = want.abs().max()
    assert torch.isfinite(got).all() and (got - want).abs().max() <= 2e-6 * scale
    assert (fast - want).abs().max() <= 1e-5 * scale
    assert m.config.data.centered == (not unet_args[3])
    assert type(m.sde).__name__ == "VESDE" and m.sde.sigma_max == diffusers_format.SCHEDULER["sigma_max"]


def test_round_trip_through_diffusers_is_exact(tmp_path):
    unet = make_unet(*UNETS[1])
    unet.save_pretrained(tmp_path / "a")
    first = fastsde.load(tmp_path / "a", device="cpu")
    score_model.convert(tmp_path / "a", tmp_path / "b")  # fastsde -> a diffusers pipeline folder
    again = fastsde.load(tmp_path / "b", device="cpu")
    for (k, v), (k2, v2) in zip(first.model.state_dict().items(), again.model.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)
    reloaded = diffusers.UNet2DModel.from_pretrained(tmp_path / "b" / "unet").eval()
    for (k, v), (k2, v2) in zip(unet.state_dict().items(), reloaded.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)
    assert (
        diffusers.ScoreSdeVeScheduler.from_pretrained(tmp_path / "b" / "scheduler").config.sigma_max
        == first.sde.sigma_max
    )


def test_score_sde_ve_pipeline_matches_the_official_pc_sampler(tmp_path):
    # Both run the official PC loop: a Langevin step with the batch-averaged step size, then reverse diffusion
    # with the discrete sigmas, on one generator's noise in the same order. diffusers clips its result to [0, 1].
    unet = make_unet(*UNETS[0])
    scheduler = diffusers.ScoreSdeVeScheduler(
        num_train_timesteps=12, snr=0.16, sigma_min=0.01, sigma_max=20.0, sampling_eps=1e-4
    )
    pipe = diffusers.ScoreSdeVePipeline(unet=unet, scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    pipe.save_pretrained(tmp_path)
    theirs = pipe(
        batch_size=2, num_inference_steps=12, generator=torch.Generator().manual_seed(3), output_type="np"
    ).images
    m = fastsde.load(tmp_path, device="cpu", fold=False, channels_last=False)
    assert m.sde.N == 12 and m.config.sampling.snr == 0.16 and m.config.sampling.eps == 1e-4
    ours, nfe = fastsde.pc_sample(
        m.score_fn,
        m.sde,
        (2, 3, 16, 16),
        "reverse_diffusion",
        "langevin",
        snr=0.16,
        eps=fastsde.generate.default_eps(m.sde, m.config),
        generator=torch.Generator().manual_seed(3),
    )
    ours = ours.clamp(0, 1).permute(0, 2, 3, 1).numpy()
    assert nfe == 24 and abs(ours - theirs).max() < 1e-4


def test_model_that_diffusers_cannot_run_still_loads_and_is_not_exported(tmp_path):
    # ffhq-1024's nf = 16: attention at 16 channels, where diffusers' GroupNorm group counts differ from
    # NCSN++'s. The weights load as the official network; exporting says why it cannot.
    config = diffusers_format._config(
        dict(
            block_out_channels=[16, 16],
            layers_per_block=1,
            sample_size=8,
            in_channels=3,
            center_input_sample=True,
            down_block_types=["SkipDownBlock2D", "AttnSkipDownBlock2D"],
            up_block_types=["AttnSkipUpBlock2D", "SkipUpBlock2D"],
        ),
        diffusers_format.SCHEDULER,
    )
    torch.manual_seed(0)
    model = create_model(config)
    unet = diffusers_format.unet_config(config)
    checkpoint.write_safetensors(
        tmp_path / "diffusion_pytorch_model.safetensors", diffusers_format.to_diffusers(model.state_dict(), unet)
    )
    (tmp_path / "config.json").write_text(json.dumps(unet))
    loaded = fastsde.load(tmp_path, device="cpu")
    for (k, v), v2 in zip(model.state_dict().items(), loaded.model.state_dict().values()):
        assert torch.equal(v, v2), k
    with pytest.raises(ValueError, match="32 GroupNorm groups where NCSN\\+\\+ uses 4"):
        score_model.convert(tmp_path, tmp_path / "out")
    with pytest.raises(ValueError, match="model.name 'ddpm'"):
        diffusers_format.write(tmp_path / "x", None, configs.get("vp/ddpm/cifar10"))


def test_diffusers_folders_that_do_not_fit_are_refused(tmp_path):
    ddpm = diffusers.UNet2DModel(
        sample_size=16,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=8,
    )
    ddpm.save_pretrained(tmp_path / "ddpm")
    with pytest.raises(
        CheckpointError,
        match="not in the NCSN\\+\\+ layout.*time_embedding_type 'positional'.*"
        "down_block_types DownBlock2D, AttnDownBlock2D",
    ):
        fastsde.load(tmp_path / "ddpm", device="cpu")
    unet = make_unet(*UNETS[0])
    unet.save_pretrained(tmp_path / "m")
    from safetensors.torch import load_file, save_file

    path = tmp_path / "m" / "diffusion_pytorch_model.safetensors"
    state = load_file(path)
    save_file({**state, "extra.weight": torch.zeros(1)}, path)
    with pytest.raises(CheckpointError, match="1 weights that the NCSN\\+\\+ layout .* does not have: extra.weight"):
        fastsde.load(tmp_path / "m", device="cpu")
    save_file({k: v for k, v in state.items() if k != "conv_in.bias"}, path)
    with pytest.raises(CheckpointError, match="1 missing: all_modules.3.bias"):
        fastsde.load(tmp_path / "m", device="cpu")
    save_file({**state, "conv_in.bias": torch.zeros(5)}, path)
    with pytest.raises(CheckpointError, match="mis-shaped: all_modules.3.bias: checkpoint \\(5,\\), model \\(32,\\)"):
        fastsde.load(tmp_path / "m", device="cpu")
    save_file(state, path)
    os.makedirs(tmp_path / "pipe" / "scheduler")
    os.rename(tmp_path / "m", tmp_path / "pipe" / "unet")
    (tmp_path / "pipe" / "scheduler" / "scheduler_config.json").write_text(json.dumps({"_class_name": "DDPMScheduler"}))
    with pytest.raises(CheckpointError, match="scheduler_config.json: a 'DDPMScheduler'; an NCSN\\+\\+ score model"):
        fastsde.load(tmp_path / "pipe", device="cpu")
    os.makedirs(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="neither a training workdir .* nor a diffusers model"):
        fastsde.load(tmp_path / "empty", device="cpu")


def test_load_reads_every_source_and_exports_top_level(tmp_path):
    assert fastsde.load_checkpoint is checkpoint.load_checkpoint
    default = fastsde.load(device="cpu")
    assert default.config.model.name == "ncsnpp" and default.shape == (3, 8, 8)
    pth = os.path.join(FIXTURES, "ncsnpp_ve_cifar_small.pth")
    config = os.path.join(FIXTURES, "ncsnpp_ve_cifar_small.json")
    official = fastsde.load(pth, config, device="cpu")
    score_model.convert(pth, tmp_path / "w.safetensors", config=config)
    converted = fastsde.load(tmp_path / "w.safetensors", device="cpu")
    assert checkpoint.digest(official.model) == checkpoint.digest(converted.model)
    assert converted.config == configs.load(config)
    with pytest.raises(FileNotFoundError, match="missing.pth: no such file"):
        fastsde.load(tmp_path / "missing.pth")


def test_sample_is_the_engine_path_and_independent_of_the_batch():
    m = fastsde.load(device="cpu")
    images, nfe = m.sample(5, sampler="pc", steps=25, seed=4, batch_size=2, return_nfe=True)
    assert images.shape == (5, 8, 8, 3) and images.dtype == torch.uint8 and (nfe == 25).all()  # digits: no corrector
    whole = m.sample(5, sampler="pc", steps=25, seed=4, batch_size=5)
    assert torch.equal(images, whole)
    from fastsde import generate

    sde = score_model.with_steps(m.sde, m.config, 25)
    engine = fastsde.engine.fast_score_fn(m.model, sde, True, "cpu")
    x, _ = generate.sample_batch(engine, sde, m.config, list(range(5)), 4, "pc", device="cpu")
    assert torch.equal(images, fastsde.data.to_uint8(x, True).permute(0, 2, 3, 1))
    floats = m.sample(2, sampler="dpmpp_2m", steps=8, output="float")
    assert floats.shape == (2, 3, 8, 8) and floats.dtype == torch.float32
    with pytest.raises(ValueError, match="output must be one of uint8, float, got 'png'"):
        m.sample(1, output="png")
    with pytest.raises(ValueError, match="n must be a positive integer, got 0"):
        m.sample(0)


def test_likelihood_encode_decode_inpaint_colorize():
    m = fastsde.load(device="cpu")
    images = m.sample(2, sampler="heun", steps=6)
    bpd = m.likelihood(images, rtol=1e-3, atol=1e-3)
    assert bpd.shape == (2,) and torch.isfinite(bpd).all() and (bpd > 0).all()
    x = images.permute(0, 3, 1, 2).float() / 255
    z = m.encode(x, method="heun", steps=30)
    back = m.decode(z, method="heun", steps=30)
    assert z.shape == (2, 3, 8, 8) and (back - x).abs().max() < 0.05
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., :4] = 1
    filled = m.inpaint(images, mask, n_steps=1)
    assert torch.equal(filled[:, :, :4], images[:, :, :4])
    grey = images.float().mean(3, keepdim=True).round().to(torch.uint8)
    coloured = m.colorize(grey.permute(0, 3, 1, 2).float() / 255, output="float")
    torch.testing.assert_close(
        coloured.mean(1, keepdim=True), grey.permute(0, 3, 1, 2).float() / 255, atol=1e-5, rtol=0
    )
    with pytest.raises(ValueError, match="images must be a 4-D tensor"):
        m.likelihood(torch.zeros(8, 8))


def test_cli_samples_from_and_converts_diffusers_folders(tmp_path, capsys):
    from fastsde import cli

    make_unet(*UNETS[0]).save_pretrained(tmp_path / "d")
    run = lambda *argv: cli.main([str(a) for a in argv])  # noqa: E731
    assert (
        run(
            "sample",
            "--ckpt",
            tmp_path / "d",
            "--sampler",
            "dpmpp_2m",
            "--steps",
            3,
            "--num-samples",
            2,
            "--out",
            tmp_path / "s",
            "--device",
            "cpu",
        )
        == 0
    )
    assert "2 samples" in capsys.readouterr().out
    assert run("convert", "--ckpt", tmp_path / "d", "--out", tmp_path / "w.safetensors") == 0
    assert run("convert", "--ckpt", tmp_path / "w.safetensors", "--out", tmp_path / "e") == 0
    a, b = (fastsde.load(tmp_path / k, device="cpu").model.state_dict() for k in ("d", "e"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert run("convert", "--ckpt", tmp_path / "w.safetensors", "--out", tmp_path / "f", "--dtype", "fp16") == 1
    assert "dtype: diffusers folders are written in float32" in capsys.readouterr().err


JAX = os.path.join(FIXTURES, "jax")
JAX_CASES = ["ncsnpp_ve_cifar_small", "ncsnpp_ve_ffhq256_small", "ddpmpp_vp_cifar_small", "ddpm_vp_cifar_small"]


@pytest.mark.parametrize("name", JAX_CASES)
@pytest.mark.parametrize("which", ["ema", "raw"])
def test_jax_checkpoint_gives_the_official_jax_output(name, which):
    # tests/fixtures/make_jax_fixtures.py ran the official JAX code (yang-song/score_sde) on these weights.
    expected = np.load(os.path.join(JAX, f"{name}.expected.npz"))
    m = fastsde.load(
        os.path.join(JAX, name, "checkpoint_1"), os.path.join(JAX, f"{name}.json"), device="cpu", use_ema=which == "ema"
    )
    with torch.no_grad():
        out = m.model(torch.tensor(expected["x"]), torch.tensor(expected["labels"]))
    want = torch.tensor(expected[which])
    assert torch.isfinite(out).all() and (out - want).abs().max() <= 2e-6 * want.abs().max()


def test_jax_workdir_config_detection_and_conversion(tmp_path, monkeypatch):
    name = "ncsnpp_ve_ffhq256_small"
    config = configs.load(os.path.join(JAX, f"{name}.json"))
    os.makedirs(tmp_path / "w" / "checkpoints")
    for step in (1, 9, 10):  # the newest by number, as the official code names them (no suffix)
        shutil.copy(os.path.join(JAX, name, "checkpoint_1"), tmp_path / "w" / "checkpoints" / f"checkpoint_{step}")
    (tmp_path / "w" / "checkpoints" / "checkpoint_10").write_bytes(b"\x87\xa4step")
    with pytest.raises(CheckpointError, match="checkpoint_10: truncated msgpack data"):
        fastsde.load(tmp_path / "w", config, device="cpu")
    os.unlink(tmp_path / "w" / "checkpoints" / "checkpoint_10")
    with pytest.raises(CheckpointError, match="no official config fits"):  # a shrunk network: none does
        fastsde.load(tmp_path / "w", device="cpu")
    # Detection tries each official config's layout; here the fixture's is the only one there is.
    monkeypatch.setattr(configs, "names", lambda official_only=False: ["small"])
    monkeypatch.setattr(configs, "get", lambda n: configs.load(os.path.join(JAX, f"{name}.json")))
    with torch.device("meta"):
        shape = checkpoint.signature(create_model(config).state_dict())
    monkeypatch.setattr(checkpoint, "official_signature", lambda n: shape)
    m = fastsde.load(tmp_path / "w", device="cpu")
    assert m.config == config and type(m.sde).__name__ == "VESDE"
    score_model.convert(tmp_path / "w", tmp_path / "w.safetensors", config=config)
    again = fastsde.load(tmp_path / "w.safetensors", device="cpu")
    assert checkpoint.digest(again.model) == checkpoint.digest(m.model)


def test_msgpack_reader(tmp_path):
    from fastsde import jax_format

    cases = {
        b"\x82\xa1a\xff\xa1b\x92\xcb\x3f\xf0\x00\x00\x00\x00\x00\x00\xc3": {"a": -1, "b": [1.0, True]},
        b"\xde\x00\x01\xd9\x01k\xd1\xff\x00": {"k": -256},
        b"\x81\xa1z\xc0": {"z": None},
    }
    for data, want in cases.items():
        (tmp_path / "c").write_bytes(data)
        assert jax_format.is_checkpoint(tmp_path / "c") and jax_format.read(tmp_path / "c") == want
    (tmp_path / "c").write_bytes(b"\x81\xa1a\xc1")
    with pytest.raises(CheckpointError, match="not msgpack data \\(byte 0xc1"):
        jax_format.read(tmp_path / "c")
    (tmp_path / "c").write_bytes(b"\x81\xa1a\x01\x02")
    with pytest.raises(CheckpointError, match="1 bytes after the msgpack data"):
        jax_format.read(tmp_path / "c")
    (tmp_path / "c").write_bytes(b"\x81\xa1a\xd4\x07\x00")
    with pytest.raises(CheckpointError, match="extension type 7 is not one Flax writes"):
        jax_format.read(tmp_path / "c")
    (tmp_path / "c").write_bytes(b"\x80\x02")  # a legacy torch pickle starts so: not taken for Flax
    assert not jax_format.is_checkpoint(tmp_path / "c")
