"""Drop-in loading of official checkpoints: the shared fixtures (made by the official code) must give
the official model outputs and scores; mismatches and unsafe files are refused clearly."""

import json
import math
import os
import pickle

import pytest
import torch

from fastsde import checkpoint, configs, score_model
from fastsde.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from fastsde.models import create_model, get_score_fn
from fastsde.models.ncsnpp import get_sigmas

from conftest import FIXTURES

# The shared fixtures (the first two), then those of make_official_fixtures.py: every network family
# and label convention of the official code (tests/fixtures/README.md).
CASES = [
    "ncsnpp_ve_cifar_small",
    "ddpmpp_vp_cifar_small",
    "ncsnpp_ve_ffhq256_small",
    "ncsnpp_ve_cifar_discrete_small",
    "ddpmpp_subvp_cifar_small",
    "ddpm_vp_cifar_discrete_small",
    "ddpm_ve_cifar_discrete_small",
    "ncsnv2_ve_cifar_small",
    "ncsnv2_128_ve_bedroom_small",
    "ncsnv2_256_ve_small",
]


def fixture(name, ext):
    return os.path.join(FIXTURES, f"{name}.{ext}")


def rel_err(a, b):
    """The largest difference relative to the largest value. float32 rounding through these networks
    stays near 1e-6 (measured on every CPU backend); 1e-5 is the contract (tests/fixtures/README.md),
    which a GroupNorm eps of 1e-5 instead of 1e-6 already breaks (2.6e-5)."""
    return ((a.double() - b.double()).abs().max() / b.double().abs().max()).item()


@pytest.mark.parametrize("backend", ["reference", "cpp", "triton"])  # triton: interpreted without a GPU
@pytest.mark.parametrize("name", CASES)
def test_matches_official_outputs(name, backend, monkeypatch):
    monkeypatch.setenv("FASTSDE_BACKEND", backend)
    model, sde, _ = load_checkpoint(fixture(name, "pth"), fixture(name, "json"))
    e = torch.load(fixture(name, "expected.pt"), weights_only=True)
    with torch.no_grad():
        out = model(e["x"], e["labels"])
        score = get_score_fn(sde, model, continuous=e["continuous"])(e["x"], e["t"])
    assert out.dtype == torch.float32
    assert rel_err(out, e["model_out"]) < 1e-5
    assert rel_err(score, e["score"]) < 1e-5


@pytest.mark.parametrize("name", CASES)
def test_raw_weights_on_request(name):
    raw, _, _ = load_checkpoint(fixture(name, "pth"), fixture(name, "json"), use_ema=False)
    ema, _, _ = load_checkpoint(fixture(name, "pth"), fixture(name, "json"))
    state = checkpoint.strip_prefix(checkpoint.read(fixture(name, "pth"))["model"])
    for k, v in raw.state_dict().items():
        assert torch.equal(v, state[k]), k
    e = torch.load(fixture(name, "expected.pt"), weights_only=True)
    with torch.no_grad():
        assert rel_err(raw(e["x"], e["labels"]), e["model_out"]) > 1e-3  # the EMA weights differ


def test_channels_last_and_autocast():
    name = CASES[0]
    model, _, _ = load_checkpoint(fixture(name, "pth"), fixture(name, "json"))
    e = torch.load(fixture(name, "expected.pt"), weights_only=True)
    with torch.no_grad():
        cl = model.to(memory_format=torch.channels_last)(
            e["x"].contiguous(memory_format=torch.channels_last), e["labels"]
        )
        assert rel_err(cl, e["model_out"]) < 1e-5
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(e["x"], e["labels"])
        assert rel_err(low.float(), e["model_out"]) < 0.1


def test_round_trip_official_format(tmp_path):
    name = CASES[0]
    model, _, config = load_checkpoint(fixture(name, "pth"), fixture(name, "json"))
    path = tmp_path / "ckpt" / "checkpoint_1.pth"
    save_checkpoint(path, model, step=7)
    raw = checkpoint.read(path)
    assert raw["step"] == 7 and all(k.startswith("module.") for k in raw["model"])
    again, _, _ = load_checkpoint(path, config)
    e = torch.load(fixture(name, "expected.pt"), weights_only=True)
    with torch.no_grad():
        torch.testing.assert_close(again(e["x"], e["labels"]), model(e["x"], e["labels"]), rtol=0, atol=0)


def test_mismatched_config_lists_keys():
    name = CASES[0]
    config = configs.load(fixture(name, "json"))
    config.model.nf = 32
    with pytest.raises(CheckpointError, match=r"mis-shaped: all_modules.0.W: checkpoint \(16,\), model \(32,\)"):
        load_checkpoint(fixture(name, "pth"), config)
    config = configs.load(fixture(name, "json"))
    config.model.attn_resolutions = []
    with pytest.raises(CheckpointError, match="54 missing: .*; 74 unexpected: all_modules.8.NIN_0.W"):
        load_checkpoint(fixture(name, "pth"), config)


def test_a_config_that_does_not_fit_the_weights_builds_nothing(tmp_path, monkeypatch):
    # An untrusted .safetensors whose config says nf=4096 once made fastsde allocate gigabytes before
    # any shape was checked: now the network is built on the meta device until the shapes fit.
    name = CASES[0]
    model, _, config = load_checkpoint(fixture(name, "pth"), fixture(name, "json"))
    big = json.loads(json.dumps(config))
    big["model"]["nf"] = 4096
    checkpoint.save_safetensors(tmp_path / "big.safetensors", model, big)
    built = []
    real = checkpoint.create_model
    monkeypatch.setattr(checkpoint, "create_model", lambda c: built.append(torch.empty(0).device.type) or real(c))
    for path, given in ((tmp_path / "big.safetensors", None), (fixture(name, "pth"), big)):
        with pytest.raises(
            CheckpointError,
            match=r"the weights do not fit the NCSNpp that the config describes: "
            r".*mis-shaped: all_modules.0.W: checkpoint \(16,\), model \(4096,\)",
        ):
            load_checkpoint(path, given)
    assert built == ["meta", "meta"]
    load_checkpoint(tmp_path / "big.safetensors", config)
    assert built[2:] == ["meta", "cpu"]


def test_bad_ema_is_an_error(tmp_path):
    name = CASES[1]
    ckpt = checkpoint.read(fixture(name, "pth"))
    ckpt["ema"]["shadow_params"] = ckpt["ema"]["shadow_params"][:-1]
    torch.save(ckpt, tmp_path / "short.pth")
    with pytest.raises(CheckpointError, match="shadow_params has .* entries; the model has"):
        load_checkpoint(tmp_path / "short.pth", fixture(name, "json"))
    ckpt = checkpoint.read(fixture(name, "pth"))
    ckpt["ema"]["shadow_params"][0] = torch.zeros(3)
    torch.save(ckpt, tmp_path / "shape.pth")
    with pytest.raises(CheckpointError, match="shadow_params do not fit"):
        load_checkpoint(tmp_path / "shape.pth", fixture(name, "json"))
    ckpt = checkpoint.read(fixture(name, "pth"))
    del ckpt["ema"]
    torch.save(ckpt, tmp_path / "raw.pth")
    with pytest.raises(CheckpointError, match="has no 'ema' entry; pass use_ema=False for the raw weights"):
        load_checkpoint(tmp_path / "raw.pth", fixture(name, "json"))
    load_checkpoint(tmp_path / "raw.pth", fixture(name, "json"), use_ema=False)


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_unsafe_and_corrupt_files_refused(tmp_path):
    with open(tmp_path / "evil.pth", "wb") as fh:
        pickle.dump({"model": Evil()}, fh)
    torch.save({"model": {}, "extra": Evil()}, tmp_path / "evil2.pth")
    for f in ("evil.pth", "evil2.pth"):
        with pytest.raises(CheckpointError, match="refused") as e:
            load_checkpoint(tmp_path / f, fixture(CASES[0], "json"))
        assert "weights_only` set to `False`" not in str(e.value)  # never advise unsafe loading
    data = open(fixture(CASES[0], "pth"), "rb").read()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_checkpoint(tmp_path / "cut.pth", fixture(CASES[0], "json"))


def test_plain_state_dict(tmp_path):
    name = CASES[1]
    model, _, config = load_checkpoint(fixture(name, "pth"), fixture(name, "json"))
    torch.save(model.state_dict(), tmp_path / "plain.pth")
    again, _, _ = load_checkpoint(tmp_path / "plain.pth", config)
    for (k, a), b in zip(model.state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), k


def test_gradients_flow_through_the_kernels():
    config = configs.load(fixture(CASES[0], "json"))
    model = create_model(config)
    x = torch.rand(2, 3, 16, 16, requires_grad=True)
    model(x, torch.tensor([1.0, 10.0])).square().mean().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


# Parameter counts, state-dict sizes of the official networks (measured on the official code).
OFFICIAL_SIZES = {
    "ve/cifar10_ncsnpp_continuous": (62_758_915, 572),
    "ve/cifar10_ncsnpp": (62_693_251, 571),
    "vp/cifar10_ncsnpp_continuous": (62_693_251, 571),
    "ve/cifar10_ncsnpp_deep_continuous": (107_587_075, 964),
    "vp/cifar10_ddpmpp_continuous": (61_804_419, 565),
    "vp/cifar10_ddpmpp_deep_continuous": (106_632_579, 957),
    "subvp/cifar10_ddpmpp_deep_continuous": (106_632_579, 957),
    "ve/ffhq_256_ncsnpp_continuous": (65_574_549, 646),
    "ve/church_ncsnpp_continuous": (65_574_549, 646),
    "ve/ffhq_ncsnpp_continuous": (105_785_896, 554),
}


@pytest.mark.parametrize("name", sorted(OFFICIAL_SIZES))
def test_official_configs_build_at_full_size(name):
    with torch.device("meta"):
        model = create_model(configs.get(name))
    params, keys = OFFICIAL_SIZES[name]
    assert sum(p.numel() for p in model.parameters()) == params
    assert len(model.state_dict()) == keys


def test_official_key_layout():
    with torch.device("meta"):
        model = create_model(configs.get("ve/cifar10_ncsnpp_continuous"))
    keys = list(model.state_dict())
    assert keys[:4] == ["sigmas", "all_modules.0.W", "all_modules.1.weight", "all_modules.1.bias"]
    assert "all_modules.9.Conv2d_0.weight" in keys and "all_modules.11.NIN_3.W" in keys
    assert keys[-2:] == ["all_modules.58.weight", "all_modules.58.bias"]
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert len(trainable) == 570 and trainable[0] == "all_modules.1.weight"  # the EMA's order
    with torch.device("meta"):
        ffhq = create_model(configs.get("ve/ffhq_256_ncsnpp_continuous"))
    assert len(ffhq.all_modules) == 77


def test_every_official_config_by_name():
    assert len(configs.names(official_only=True)) == 39
    c = configs.get("vp/ddpm/cifar10")
    assert c.model.name == "ddpm" and c.training.sde == "vpsde" and not c.training.continuous
    c = configs.get("ve/ffhq_ncsnpp_continuous")
    assert c.model.nf == 16 and c.model.sigma_max == 1348 and c.training.reduce_mean
    with pytest.raises(ValueError, match="unknown config 've/nope'; known: digits, subvp/cifar10_ddpm_continuous"):
        configs.get("ve/nope")


def test_detect_config_from_keys_and_shapes():
    with torch.device("meta"):
        state = create_model(configs.get("ve/cifar10_ncsnpp_deep_continuous")).state_dict()
    state["sigmas"] = torch.exp(torch.linspace(math.log(50), math.log(0.01), 1000, dtype=torch.float64))
    assert checkpoint.detect_config(state) == "ve/cifar10_ncsnpp_deep_continuous"
    with torch.device("meta"):
        state = create_model(configs.get("vp/cifar10_ddpmpp_continuous")).state_dict()
    state["sigmas"] = torch.exp(torch.linspace(math.log(50), math.log(0.01), 1000, dtype=torch.float64))
    with pytest.raises(CheckpointError, match="several official configs fit .*subvp/cifar10_ddpmpp_continuous"):
        checkpoint.detect_config(state)
    with pytest.raises(CheckpointError, match="no official config fits"):
        checkpoint.detect_config(checkpoint.strip_prefix(checkpoint.read(fixture(CASES[0], "pth"))["model"]))
    # The 256x256 VE networks are alike in shape; the sigmas buffer (sigma_max) tells them apart.
    for name in ("ve/bedroom_ncsnpp_continuous", "ve/church_ncsnpp_continuous"):
        config = configs.get(name)
        with torch.device("meta"):
            state = create_model(config).state_dict()
        state["sigmas"] = torch.tensor(get_sigmas(config))
        assert checkpoint.detect_config(state) == name


def tiny(name, **model):
    config = configs.get(name)
    config.data.image_size = 8
    config.model.update(nf=8, ch_mult=[1, 2], num_res_blocks=1, attn_resolutions=[4], dropout=0.0, **model)
    return config


VARIANTS = [
    dict(),
    dict(progressive="output_skip", progressive_input="input_skip"),
    dict(progressive="output_skip", progressive_input="input_skip", progressive_combine="cat"),
    dict(progressive="residual", progressive_input="residual"),
    dict(progressive="residual", progressive_input="residual", fir=False),
    dict(resblock_type="ddpm"),
    dict(resblock_type="ddpm", fir=False, skip_rescale=False),
    dict(embedding_type="positional", conditional=False, scale_by_sigma=False),
]


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: ",".join(f"{k}={x}" for k, x in v.items()) or "base")
def test_ncsnpp_options_run_alike_on_every_backend(variant, monkeypatch):
    torch.manual_seed(0)
    model = create_model(tiny("ve/cifar10_ncsnpp_continuous", **variant)).eval()
    x, labels = torch.rand(2, 3, 8, 8), torch.tensor([0.5, 20.0])
    if variant.get("embedding_type") == "positional":
        labels = torch.tensor([3, 900])
    outs = []
    for backend in ("reference", "cpp"):
        monkeypatch.setenv("FASTSDE_BACKEND", backend)
        with torch.no_grad():
            outs.append(model(x, labels))
    assert outs[0].shape == x.shape and outs[0].dtype == torch.float32 and torch.isfinite(outs[0]).all()
    torch.testing.assert_close(outs[1], outs[0], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["vp/ddpm/cifar10", "vp/ddpm/cifar10_unconditional", "ve/cifar10_ddpm"])
def test_ddpm_model(name, monkeypatch):
    torch.manual_seed(0)
    config = tiny(name)
    config.model.ch_mult, config.model.nf = [1, 2], 32  # 32 groups
    model = create_model(config).eval()
    x, labels = torch.rand(2, 3, 8, 8), torch.tensor([3, 900])
    outs = []
    for backend in ("reference", "cpp"):
        monkeypatch.setenv("FASTSDE_BACKEND", backend)
        with torch.no_grad():
            outs.append(model(x, labels))
    assert outs[0].shape == x.shape and torch.isfinite(outs[0]).all()
    torch.testing.assert_close(outs[1], outs[0], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "name,params,keys", [("vp/ddpm/cifar10", 35_218_947, 309), ("vp/ddpm/church", 111_569_923, 431)]
)
def test_ddpm_sizes(name, params, keys):
    with torch.device("meta"):
        model = create_model(configs.get(name))
    assert sum(p.numel() for p in model.parameters()) == params and len(model.state_dict()) == keys


def test_safetensors_round_trip_and_conversion(tmp_path):
    name = CASES[0]
    out = tmp_path / "w" / "model.safetensors"
    config = score_model.convert(fixture(name, "pth"), out, config=fixture(name, "json"))
    assert config.model.nf == 16
    model, sde, cfg = load_checkpoint(out)  # the config travels in the file's metadata
    e = torch.load(fixture(name, "expected.pt"), weights_only=True)
    with torch.no_grad():
        assert rel_err(model(e["x"], e["labels"]), e["model_out"]) < 1e-5
    assert type(sde).__name__ == "VESDE" and cfg == config
    (tmp_path / "bad.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        load_checkpoint(tmp_path / "bad.safetensors", config)
    checkpoint.save_safetensors(tmp_path / "bn.safetensors", torch.nn.BatchNorm2d(2), dtype=torch.float16)
    state, _ = checkpoint.read_safetensors(tmp_path / "bn.safetensors")
    assert state["weight"].dtype == torch.float16 and state["num_batches_tracked"].dtype == torch.int64  # ints kept


@pytest.mark.parametrize("name", ["ve/ncsn/cifar10", "ve/ncsnv2/cifar10", "ve/ncsnv2/celeba", "ve/ncsnv2/bedroom"])
def test_ncsn_family_builds_and_runs(name):
    # Upstream's port cannot build these (config.data.channels); here they build and run.
    torch.manual_seed(0)
    config = configs.get(name)
    config.model.nf = 8
    model = create_model(config).eval()
    s = config.data.image_size
    x = torch.rand(2, 3, s, s)
    y = torch.tensor([0, config.model.num_scales - 1])
    with torch.no_grad():
        out = model(x, y)
        swapped = model(x, y.flip(0))
    assert out.shape == x.shape and torch.isfinite(out).all()
    assert not torch.allclose(out, swapped)  # the noise level matters (conditional norms, or 1/sigma_y)
    if config.model.name != "ncsn":
        # NCSNv2 is unconditional apart from the division by sigma_y.
        torch.testing.assert_close(
            out * model.sigmas[y].float()[:, None, None, None],
            swapped * model.sigmas[y.flip(0)].float()[:, None, None, None],
        )


def test_ncsnv2_takes_the_noise_levels_as_continuous_labels():
    # Integer labels index the sigmas (discrete, as upstream); floating ones are the sigmas themselves.
    # ve/ncsnv2/bedroom is continuous by its `training.continuouse` typo: its labels are sigma(t).
    name = "ncsnv2_128_ve_bedroom_small"
    model, _, _ = load_checkpoint(fixture(name, "pth"), fixture(name, "json"))
    e = torch.load(fixture(name, "expected.pt"), weights_only=True)
    with torch.no_grad():
        out = model(e["x"], model.sigmas[e["labels"]].float())
    assert rel_err(out, e["model_out"]) < 1e-5
    assert configs.get("ve/ncsnv2/bedroom").training.continuous
    ncsn = create_model(tiny("ve/ncsn/cifar10"))
    with pytest.raises(ValueError, match="ncsn: y must be integer noise-level indices .* got torch.float32"):
        ncsn(torch.rand(2, 3, 32, 32), torch.tensor([0.5, 3.0]))


def test_ncsn_family_state_dict_layout():
    with torch.device("meta"):
        v2 = create_model(configs.get("ve/ncsnv2/cifar10"))
        v1 = create_model(configs.get("ve/ncsn/cifar10"))
    keys = list(v2.state_dict())
    assert keys[:4] == ["sigmas", "begin_conv.weight", "begin_conv.bias", "normalizer.alpha"]
    assert "res2.0.shortcut.conv.weight" in keys and "refine4.output_convs.3_2_conv.weight" in keys
    assert "refine1.msf.convs.0.weight" not in keys and "refine2.msf.convs.1.weight" in keys
    v1_keys = list(v1.state_dict())
    assert "sigmas" not in v1_keys and "res1.0.normalize1.embed.weight" in v1_keys
    assert v1.state_dict()["res1.0.normalize1.embed.weight"].shape == (10, 3 * 128)


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path):
    path = tmp_path / "ckpt.pth"
    checkpoint.atomic_save({"step": 1}, path)

    def broken(tmp):
        with open(tmp, "wb") as fh:
            fh.write(b"half a checkpoint")
        raise KeyboardInterrupt  # interrupted mid-write

    with pytest.raises(KeyboardInterrupt):
        checkpoint.atomic_write(path, broken)
    assert checkpoint.read(path) == {"step": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.pth"]  # no temporary left behind


def test_atomic_write_gives_the_permissions_of_a_plain_write(tmp_path):
    umask = os.umask(0o027)
    try:
        checkpoint.atomic_write_bytes(tmp_path / "a.json", "{}")
    finally:
        os.umask(umask)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o640  # not mkstemp's private 0600


def test_configs_load_takes_names_dicts_and_files(tmp_path):
    by_name = configs.load("ve/cifar10_ncsnpp_continuous.py")
    assert by_name == configs.get("ve/cifar10_ncsnpp_continuous")
    (tmp_path / "c.json").write_text(__import__("json").dumps(by_name))
    assert configs.load(tmp_path / "c.json") == by_name and configs.load(dict(by_name)).model.nf == 128
