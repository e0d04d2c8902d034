"""diffusers' NCSN++ (a UNet2DModel in the score_sde layout, as google/ncsnpp-*): read into fastsde's
NCSNpp, and written back as a folder that diffusers loads.

Both networks run the same modules in the same order; only their names differ. _layout lists the
diffusers modules in the order of the official `all_modules`, and _PARAMS renames each module's
parameters. The SDE comes from the pipeline's scheduler (ScoreSdeVeScheduler). docs/checkpoints.md
says where diffusers computes something else than the official network.
"""

import copy
import json
import math
import os

import torch

from . import checkpoint, configs
from .models.ncsnpp import get_sigmas

WEIGHTS = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")
DOWN = {"SkipDownBlock2D": False, "AttnSkipDownBlock2D": True}  # block type: has attention
UP = {"SkipUpBlock2D": False, "AttnSkipUpBlock2D": True}
SCHEDULER = dict(
    num_train_timesteps=2000, snr=0.15, sigma_min=0.01, sigma_max=1348.0, sampling_eps=1e-5, correct_steps=1
)  # ScoreSdeVeScheduler's defaults

# (diffusers name, fastsde name) of each kind of module's parameters; NIN weights are transposed.
_PARAMS = {
    "fourier": [("weight", "W")],
    "layer": [("weight", "weight"), ("bias", "bias")],
    "combine": [("weight", "Conv_0.weight"), ("bias", "Conv_0.bias")],
    "resnet": [
        (f"{d}.{p}", f"{f}.{p}")
        for d, f in (
            ("norm1", "GroupNorm_0"),
            ("conv1", "Conv_0"),
            ("time_emb_proj", "Dense_0"),
            ("norm2", "GroupNorm_1"),
            ("conv2", "Conv_1"),
            ("conv_shortcut", "Conv_2"),
        )
        for p in ("weight", "bias")
    ],
    "attention": [("group_norm.weight", "GroupNorm_0.weight"), ("group_norm.bias", "GroupNorm_0.bias")]
    + [
        (f"{d}.{p}", f"NIN_{i}.{'W' if p == 'weight' else 'b'}")
        for i, d in enumerate(("to_q", "to_k", "to_v", "to_out.0"))
        for p in ("weight", "bias")
    ],
}
# The NCSN++ architecture that diffusers' layout fixes (the rest comes from its config.json).
LAYOUT = dict(
    name="ncsnpp",
    resblock_type="biggan",
    progressive="output_skip",
    progressive_input="input_skip",
    progressive_combine="sum",
    embedding_type="fourier",
    fourier_scale=16,
    fir=True,
    fir_kernel=[1, 3, 3, 1],
    skip_rescale=True,
    scale_by_sigma=True,
    conditional=True,
    nonlinearity="swish",
)
_OLD_ATTENTION = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}  # diffusers < 0.14


def _nin_layout(ours, value):
    """A weight in the other library's layout: NIN's W [in, out] is a Linear's weight [out, in], and
    the transpose is its own inverse; every other tensor is shared as it is."""
    return value.t() if ours.endswith(".W") and value.dim() == 2 else value


def is_folder(path):
    """Whether `path` is a diffusers model folder (a config.json naming its class) or pipeline folder
    (with unet/)."""
    if os.path.isfile(os.path.join(path, "unet", "config.json")):
        return True
    try:
        with open(os.path.join(path, "config.json")) as fh:
            return "_class_name" in json.load(fh)
    except (OSError, ValueError):
        return False


def _read_json(path):
    try:
        with open(path) as fh:
            return json.load(fh)
    except json.JSONDecodeError as e:
        raise checkpoint.CheckpointError(f"{path}: not a JSON file ({e})") from None


def _layout(unet):
    """[(diffusers module prefix, kind)] in the order of the official NCSN++'s all_modules."""
    down, up = unet["down_block_types"], unet["up_block_types"]
    layers, last = unet["layers_per_block"], len(down) - 1
    order = [
        ("time_proj", "fourier"),
        ("time_embedding.linear_1", "layer"),
        ("time_embedding.linear_2", "layer"),
        ("conv_in", "layer"),
    ]
    for i, kind in enumerate(down):
        for j in range(layers):
            order.append((f"down_blocks.{i}.resnets.{j}", "resnet"))
            if DOWN[kind]:
                order.append((f"down_blocks.{i}.attentions.{j}", "attention"))
        if i != last:
            order += [(f"down_blocks.{i}.resnet_down", "resnet"), (f"down_blocks.{i}.skip_conv", "combine")]
    order += [
        ("mid_block.resnets.0", "resnet"),
        ("mid_block.attentions.0", "attention"),
        ("mid_block.resnets.1", "resnet"),
    ]
    for i, kind in enumerate(up):
        order += [(f"up_blocks.{i}.resnets.{j}", "resnet") for j in range(layers + 1)]
        if UP[kind]:
            order.append((f"up_blocks.{i}.attentions.0", "attention"))
        if i != last:
            order += [
                (f"up_blocks.{i}.skip_norm", "layer"),
                (f"up_blocks.{i}.skip_conv", "layer"),
                (f"up_blocks.{i}.resnet_up", "resnet"),
            ]
        else:  # the top level's output head is the model's own
            order += [("conv_norm_out", "layer"), ("conv_out", "layer")]
    return order


def _check_layout(unet, path):
    """Refuses a UNet2DModel that is not in the NCSN++ layout, naming what differs."""
    if unet.get("_class_name") != "UNet2DModel":
        raise checkpoint.CheckpointError(
            f"{path}: a {unet.get('_class_name')!r}, not a UNet2DModel: fastsde reads "
            "diffusers' NCSN++ models (google/ncsnpp-*) only"
        )
    wrong = []
    if unet.get("time_embedding_type") != "fourier":
        wrong.append(f"time_embedding_type {unet.get('time_embedding_type')!r} (NCSN++: 'fourier')")
    for key, types in (("down_block_types", DOWN), ("up_block_types", UP)):
        other = [t for t in unet.get(key, ()) if t not in types]
        if other:
            wrong.append(f"{key} {', '.join(other)} (NCSN++: {' / '.join(types)})")
    if unet.get("mid_block_type", "UNetMidBlock2D") != "UNetMidBlock2D":
        wrong.append(f"mid_block_type {unet.get('mid_block_type')!r}")
    if unet.get("act_fn", "silu") not in ("silu", "swish"):
        wrong.append(f"act_fn {unet.get('act_fn')!r}")
    if unet.get("resnet_time_scale_shift", "default") != "default":
        wrong.append(f"resnet_time_scale_shift {unet.get('resnet_time_scale_shift')!r}")
    if unet.get("class_embed_type") is not None or unet.get("num_class_embeds") is not None:
        wrong.append("class conditioning")
    heads = unet.get("attention_head_dim")
    if heads is not None and any(heads != c for c in unet["block_out_channels"]):
        wrong.append(f"attention_head_dim {heads} (NCSN++: one head)")
    if wrong:
        raise checkpoint.CheckpointError(
            f"{path}: a UNet2DModel, but not in the NCSN++ layout that fastsde reads: " + "; ".join(wrong)
        )


def _scheduler(folder):
    """The ScoreSdeVeScheduler settings of a pipeline folder; its defaults where there is none."""
    path = os.path.join(folder, "scheduler", "scheduler_config.json")
    if not os.path.isfile(path):
        return dict(SCHEDULER)
    found = _read_json(path)
    if found.get("_class_name") != "ScoreSdeVeScheduler":
        raise checkpoint.CheckpointError(
            f"{path}: a {found.get('_class_name')!r}; an NCSN++ score model samples "
            "with a ScoreSdeVeScheduler (the VE SDE)"
        )
    return {k: found.get(k, v) for k, v in SCHEDULER.items()}


def _config(unet, scheduler):
    """The official-layout config of the NCSN++ that a UNet2DModel config and a scheduler describe."""
    channels = unet["block_out_channels"]
    nf, size = channels[0], unet["sample_size"]
    size = size if isinstance(size, int) else size[0]
    config = configs.get("ve/celebahq_256_ncsnpp_continuous")
    config.data.update(
        image_size=size, num_channels=unet["in_channels"], centered=not unet["center_input_sample"], dataset="diffusers"
    )
    config.model.update(
        nf=nf,
        ch_mult=[c // nf for c in channels],
        num_res_blocks=unet["layers_per_block"],
        attn_resolutions=[size // 2**i for i, t in enumerate(unet["down_block_types"]) if DOWN[t]],
        **copy.deepcopy(LAYOUT),
        dropout=0.0,
        sigma_min=scheduler["sigma_min"],
        sigma_max=scheduler["sigma_max"],
        num_scales=scheduler["num_train_timesteps"],
    )
    config.sampling.update(
        snr=scheduler["snr"],
        n_steps_each=scheduler["correct_steps"],
        predictor="reverse_diffusion",
        corrector="langevin",
        eps=scheduler["sampling_eps"],
    )
    config.training.update(sde="vesde", continuous=True)
    return config


def _weights(folder):
    for name in WEIGHTS:
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            return checkpoint.read_safetensors(path)[0] if name.endswith(".safetensors") else checkpoint.read(
                path
            ), path
    raise checkpoint.CheckpointError(f"{folder}: no weights ({' or '.join(WEIGHTS)})")


def read(path):
    """(state dict in fastsde's NCSNpp names, config) of a diffusers NCSN++ model folder or pipeline
    folder (unet/ and scheduler/). Raises CheckpointError naming the file and what does not fit."""
    folder = os.path.join(path, "unet") if os.path.isfile(os.path.join(path, "unet", "config.json")) else path
    unet = _read_json(os.path.join(folder, "config.json"))
    _check_layout(unet, os.path.join(folder, "config.json"))
    config = _config(unet, _scheduler(path))
    weights, file = _weights(folder)
    if "time_proj.W" in weights:  # the name of older diffusers
        weights["time_proj.weight"] = weights.pop("time_proj.W")
    state, used = {}, set()
    for i, (prefix, kind) in enumerate(_layout(unet)):
        for theirs, ours in _PARAMS[kind]:
            key = f"{prefix}.{theirs}"
            if key not in weights and kind == "attention":
                module, param = theirs.rsplit(".", 1)
                key = f"{prefix}.{_OLD_ATTENTION.get(module, module)}.{param}"
            if key not in weights:
                continue  # a block without a shortcut conv; build_checked names what is really missing
            value = weights[key]
            state[f"all_modules.{i}.{ours}"] = _nin_layout(ours, value)
            used.add(key)
    extra = sorted(set(weights) - used)
    if extra:
        raise checkpoint.CheckpointError(
            f"{file}: {len(extra)} weights that the NCSN++ layout of its config.json "
            f"does not have: {', '.join(extra[:5])}"
        )
    state["sigmas"] = torch.tensor(get_sigmas(config))
    return state, config


def _same(a, b):
    """Whether two config values agree: numbers by value, names whatever their case, sequences
    whatever their type."""
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return list(a) == list(b)
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    return str(a).lower() == str(b).lower()


def _exportable(config):
    """Why diffusers cannot build or run this network as fastsde does; None if it can."""
    m, d = config.model, config.data
    wrong = [f"model.{k} {m.get(k)!r} (diffusers: {v!r})" for k, v in LAYOUT.items() if not _same(m.get(k), v)]
    if d.num_channels != 3:
        wrong.append(f"data.num_channels {d.num_channels} (diffusers' skip convolutions take 3)")
    if config.training.get("sde", "vesde").lower() != "vesde":
        wrong.append(f"training.sde {config.training.sde!r} (diffusers' NCSN++ pipeline: vesde)")
    if wrong:
        return "; ".join(wrong)
    # diffusers' attention blocks normalise in 32 groups, NCSN++ in min(C / 4, 32): equal from 128 channels.
    # Its attention up blocks compute their first GroupNorm's groups as min(in + skip // 4, 32).
    levels = [m.nf * c for c in m.ch_mult]
    for level, ch in enumerate(levels):
        if d.image_size // 2**level in m.attn_resolutions and ch < 128:
            return (
                f"attention at resolution {d.image_size // 2**level} with {ch} channels: diffusers' attention "
                f"blocks use 32 GroupNorm groups where NCSN++ uses {ch // 4}, and its attention up blocks count "
                "groups as min(in + skip // 4, 32) (operator precedence): below 128 channels it computes "
                "another network"
            )
    return None


def unet_config(config):
    """The diffusers UNet2DModel config of an NCSN++ config."""
    m, size = config.model, config.data.image_size
    attention = [size // 2**i in m.attn_resolutions for i in range(len(m.ch_mult))]
    return dict(
        _class_name="UNet2DModel",
        sample_size=size,
        in_channels=config.data.num_channels,
        out_channels=config.data.num_channels,
        center_input_sample=not config.data.centered,
        time_embedding_type="fourier",
        down_block_types=[("AttnSkipDownBlock2D" if a else "SkipDownBlock2D") for a in attention],
        up_block_types=[("AttnSkipUpBlock2D" if a else "SkipUpBlock2D") for a in reversed(attention)],
        block_out_channels=[m.nf * c for c in m.ch_mult],
        layers_per_block=m.num_res_blocks,
        mid_block_scale_factor=math.sqrt(2.0),
        downsample_padding=1,
        act_fn="silu",
        attention_head_dim=None,
        norm_num_groups=None,
        norm_eps=1e-6,
        flip_sin_to_cos=True,
        freq_shift=1,
    )


def to_diffusers(state, unet):
    """fastsde NCSNpp weights (a state dict) in the names of the UNet2DModel of config `unet`."""
    weights = {}
    for i, (prefix, kind) in enumerate(_layout(unet)):
        for theirs, ours in _PARAMS[kind]:
            key = f"all_modules.{i}.{ours}"
            if key in state:
                weights[f"{prefix}.{theirs}"] = _nin_layout(ours, state[key])
    return weights


def write(folder, model, config):
    """Writes an NCSN++ `model` as a diffusers ScoreSdeVePipeline folder (model_index.json, unet/,
    scheduler/) that diffusers' from_pretrained loads. Raises ValueError saying why where diffusers
    cannot build this network."""
    config = configs.load(config)
    problem = _exportable(config)
    if problem:
        raise ValueError(f"cannot export to diffusers: {problem}")
    m, unet = config.model, unet_config(config)
    weights = {k: v.float() for k, v in to_diffusers(model.state_dict(), unet).items()}
    scheduler = dict(
        _class_name="ScoreSdeVeScheduler",
        num_train_timesteps=m.num_scales,
        snr=config.sampling.snr,
        sigma_min=m.sigma_min,
        sigma_max=m.sigma_max,
        sampling_eps=config.sampling.get("eps", 1e-5),
        correct_steps=config.sampling.n_steps_each,
    )
    index = dict(
        _class_name="ScoreSdeVePipeline",
        unet=["diffusers", "UNet2DModel"],
        scheduler=["diffusers", "ScoreSdeVeScheduler"],
    )
    checkpoint.write_safetensors(os.path.join(folder, "unet", WEIGHTS[0]), weights)
    for name, content in (
        ("unet/config.json", unet),
        ("scheduler/scheduler_config.json", scheduler),
        ("model_index.json", index),
    ):
        checkpoint.atomic_write_bytes(os.path.join(folder, name), json.dumps(content, indent=2) + "\n")
