"""Official JAX checkpoints of yang-song/score_sde (Flax msgpack files, `checkpoint_<n>`), read into
fastsde's NCSN++ / DDPM++ and DDPM networks.

The file is parsed here, as data only: msgpack's types and Flax's array extension, nothing that can
run code. Flax names a module by its class and a counter per class, in the order the network creates
them; the official PyTorch port creates them in the same order, so counting fastsde's all_modules by
their Flax class gives each one's Flax name. Parameter-free resamplers count too (_flax_names).
"""

import math
import os
import struct

import torch
from torch import nn

from . import checkpoint, configs
from .models import create_model
from .models.layers import NIN, FIRConv2d, GaussianFourierProjection, GroupNorm
from .models.ncsnpp import AttnBlockpp, Combine, Downsample, ResnetBlockBigGAN, ResnetBlockDDPM, Upsample, get_sigmas

_DTYPES = {
    "float32": torch.float32,
    "float64": torch.float64,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "int32": torch.int32,
    "int64": torch.int64,
    "uint32": torch.uint32,
    "int8": torch.int8,
    "uint8": torch.uint8,
    "bool": torch.bool,
}
_MAX_DEPTH = 64


class _Reader:
    """A msgpack decoder (the subset Flax writes, which is all of msgpack) over bytes."""

    def __init__(self, data, path):
        self.data, self.pos, self.path = memoryview(data), 0, path

    def take(self, n):
        if self.pos + n > len(self.data):
            raise checkpoint.CheckpointError(f"{self.path}: truncated msgpack data (wanted {n} bytes at {self.pos})")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def number(self, fmt):
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]

    def value(self, depth=0):
        if depth > _MAX_DEPTH:
            raise checkpoint.CheckpointError(f"{self.path}: msgpack nested deeper than {_MAX_DEPTH}")
        b = self.number(">B")
        if b <= 0x7F or b >= 0xE0:
            return b if b <= 0x7F else b - 0x100
        if 0x80 <= b <= 0x8F:
            return self.map(b & 0x0F, depth)
        if 0x90 <= b <= 0x9F:
            return [self.value(depth + 1) for _ in range(b & 0x0F)]
        if 0xA0 <= b <= 0xBF:
            return str(self.take(b & 0x1F), "utf-8")
        simple = {0xC0: None, 0xC2: False, 0xC3: True}
        if b in simple:
            return simple[b]
        sized = {0xC4: ">B", 0xC5: ">H", 0xC6: ">I", 0xD9: ">B", 0xDA: ">H", 0xDB: ">I"}
        if b in sized:
            raw = self.take(self.number(sized[b]))
            return bytes(raw) if b <= 0xC6 else str(raw, "utf-8")
        scalars = {
            0xCA: ">f",
            0xCB: ">d",
            0xCC: ">B",
            0xCD: ">H",
            0xCE: ">I",
            0xCF: ">Q",
            0xD0: ">b",
            0xD1: ">h",
            0xD2: ">i",
            0xD3: ">q",
        }
        if b in scalars:
            return self.number(scalars[b])
        if b in (0xDC, 0xDD):
            return [self.value(depth + 1) for _ in range(self.number(">H" if b == 0xDC else ">I"))]
        if b in (0xDE, 0xDF):
            return self.map(self.number(">H" if b == 0xDE else ">I"), depth)
        if b in (0xC7, 0xC8, 0xC9):
            size = self.number({0xC7: ">B", 0xC8: ">H", 0xC9: ">I"}[b])
            return self.ext(self.number(">b"), self.take(size), depth)
        if 0xD4 <= b <= 0xD8:
            kind = self.number(">b")
            return self.ext(kind, self.take(1 << (b - 0xD4)), depth)
        raise checkpoint.CheckpointError(f"{self.path}: not msgpack data (byte 0x{b:02x} at {self.pos - 1})")

    def map(self, n, depth):
        return {self.value(depth + 1): self.value(depth + 1) for _ in range(n)}

    def ext(self, kind, payload, depth):
        """Flax's extension types: 1 an ndarray (shape, dtype, bytes), 2 a complex, 3 a numpy scalar."""
        inner = _Reader(payload, self.path).value(depth + 1)
        if kind == 1:
            shape, dtype, buffer = inner
            return _tensor(buffer, dtype, shape, self.path)
        if kind == 3:
            dtype, buffer = inner
            return _tensor(buffer, dtype, (), self.path)
        if kind == 2:
            return complex(*inner)
        raise checkpoint.CheckpointError(f"{self.path}: msgpack extension type {kind} is not one Flax writes")


def _tensor(buffer, dtype, shape, path):
    if dtype not in _DTYPES:
        raise checkpoint.CheckpointError(f"{path}: arrays of dtype {dtype!r} are not read")
    t = torch.frombuffer(bytearray(buffer), dtype=_DTYPES[dtype]) if buffer else torch.zeros(0, dtype=_DTYPES[dtype])
    if t.numel() != math.prod(shape):
        raise checkpoint.CheckpointError(f"{path}: an array of shape {tuple(shape)} holds {t.numel()} values")
    return t.reshape(shape)


def _unchunk(tree):
    """Flax splits arrays over 2 GiB into chunks ({'__msgpack_chunked_array__': ..., 'chunks': ...})."""
    if not isinstance(tree, dict):
        return tree
    if "__msgpack_chunked_array__" in tree:
        chunks = [tree["chunks"][str(i)] for i in range(len(tree["chunks"]))]
        return torch.cat([c.reshape(-1) for c in chunks]).reshape(tree["shape"])
    return {k: _unchunk(v) for k, v in tree.items()}


def is_checkpoint(path):
    """Whether `path` is a file that starts as a Flax checkpoint does: a msgpack map that is not empty
    (0x80, an empty map, is also how a legacy torch pickle starts)."""
    if not os.path.isfile(path):
        return False
    with open(path, "rb") as fh:
        head = fh.read(1)
    return len(head) == 1 and (0x81 <= head[0] <= 0x8F or head[0] in (0xDE, 0xDF))


def read(path):
    """The state (nested dicts of tensors and numbers) of a Flax msgpack checkpoint."""
    with open(path, "rb") as fh:
        reader = _Reader(fh.read(), path)
    state = reader.value()
    if reader.pos != len(reader.data):
        raise checkpoint.CheckpointError(f"{path}: {len(reader.data) - reader.pos} bytes after the msgpack data")
    if not isinstance(state, dict):
        raise checkpoint.CheckpointError(f"{path}: a msgpack {type(state).__name__}, not a Flax checkpoint (a map)")
    return _unchunk(state)


def _flax_class(module, model_name):
    """The name of the official Flax module class that `module` (one of all_modules) ports."""
    ddpm = model_name == "ddpm"
    for cls, name in (
        (ResnetBlockBigGAN, "ResnetBlockBigGANpp"),
        (ResnetBlockDDPM, "ResnetBlockDDPM" if ddpm else "ResnetBlockDDPMpp"),
        (AttnBlockpp, "AttnBlock" if ddpm else "AttnBlockpp"),
        (Combine, "Combine"),
        (Upsample, "Upsample"),
        (Downsample, "Downsample"),
        (nn.Linear, "Dense"),
        (nn.Conv2d, "Conv"),
        (GroupNorm, "GroupNorm"),
        (GaussianFourierProjection, "GaussianFourierProjection"),
    ):
        if isinstance(module, cls):
            return name
    raise checkpoint.CheckpointError(f"no Flax counterpart of {type(module).__name__}")


def _flax_names(model, config):
    """The Flax name (class_counter) of each of all_modules. The official NCSN++ also creates a
    parameter-free Downsample before each input-skip Combine, and a parameter-free Upsample before
    each output-skip head but the first: they take numbers too."""
    m = config.model
    name = m.name.lower()
    input_skip = name == "ncsnpp" and m.progressive_input.lower() == "input_skip"
    output_skip = name == "ncsnpp" and m.progressive.lower() == "output_skip"
    counts, names, heads = {}, [], 0
    for module in model.all_modules:
        cls = _flax_class(module, name)
        phantom = (
            "Downsample"
            if input_skip and cls == "Combine"
            else "Upsample"
            if output_skip and cls == "GroupNorm" and heads > 0
            else None
        )
        heads += cls == "GroupNorm"
        if phantom:
            counts[phantom] = counts.get(phantom, 0) + 1
        names.append(f"{cls}_{counts.get(cls, 0)}")
        counts[cls] = counts.get(cls, 0) + 1
    return names


def _leaf(owner, leaf):
    """(Flax parameter name, its conversion to the PyTorch layout) of `owner`'s parameter `leaf`."""
    if leaf == "bias":
        return "bias", lambda v: v
    if isinstance(owner, GroupNorm):
        return "scale", lambda v: v
    if isinstance(owner, nn.Linear):
        return "kernel", lambda v: v.t()
    if isinstance(owner, (nn.Conv2d, FIRConv2d)):  # HWIO -> OIHW; StyleGAN2's Conv2d calls it 'weight'
        return "weight" if isinstance(owner, FIRConv2d) else "kernel", lambda v: v.permute(3, 2, 0, 1)
    if isinstance(owner, (NIN, GaussianFourierProjection)):
        return leaf, lambda v: v
    raise checkpoint.CheckpointError(f"no Flax counterpart of {type(owner).__name__}.{leaf}")


def to_state_dict(params, config, path):
    """A fastsde state dict from a Flax parameter tree of the network that `config` describes."""
    if config.model.name.lower() not in ("ncsnpp", "ddpm"):
        raise checkpoint.CheckpointError(
            f"{path}: fastsde reads JAX checkpoints of NCSN++ / DDPM++ and DDPM, not {config.model.name}"
        )
    with torch.device("meta"):
        shell = create_model(config)
    names = _flax_names(shell, config)
    state, used = {}, set()
    for key in shell.state_dict():
        parts = key.split(".")
        if parts[0] != "all_modules":  # sigmas, below
            continue
        flax_leaf, convert = _leaf(shell.get_submodule(".".join(parts[:-1])), parts[-1])
        route = [names[int(parts[1])], *parts[2:-1], flax_leaf]
        node = params
        for step in route:
            node = node.get(step) if isinstance(node, dict) else None
        if node is None:
            continue  # build_checked names what is missing
        state[key] = convert(node)
        used.add("/".join(route))
    unused = sorted(set(_paths(params)) - used)
    if unused:
        raise checkpoint.CheckpointError(
            f"{path}: {len(unused)} parameters that the {config.model.name} of the "
            f"config does not have: {', '.join(unused[:5])}"
        )
    state["sigmas"] = torch.tensor(get_sigmas(config))  # not a parameter in Flax: made from the config
    return state


def _paths(tree, prefix=()):
    for k, v in tree.items():
        if isinstance(v, dict):
            yield from _paths(v, (*prefix, k))
        else:
            yield "/".join((*prefix, k))


def read_state(path, config=None, use_ema=True):
    """(fastsde state dict, config) of a Flax checkpoint: its EMA parameters (params_ema, what the
    official code samples with) or the raw ones (optimizer.target). config: a config name, dict or
    JSON path; None: the official config whose network the parameters fit (see checkpoint.pick_config)."""
    ckpt = read(path)
    params = ckpt.get("params_ema") if use_ema else (ckpt.get("optimizer") or {}).get("target")
    if not isinstance(params, dict):
        raise checkpoint.CheckpointError(
            f"{path}: no {'params_ema' if use_ema else 'optimizer.target'} parameter "
            "tree: not a checkpoint of the official JAX code"
        )
    if config is None:
        mapped = {}  # name -> its state dict, kept for the one that fits

        def fits(name, candidate):
            try:
                mapped[name] = to_state_dict(params, candidate, path)
            except checkpoint.CheckpointError:
                return False
            return checkpoint.signature(mapped[name]) == checkpoint.official_signature(name)

        name = checkpoint.pick_config(fits)
        return mapped[name], configs.get(name)
    config = configs.load(config)
    return to_state_dict(params, config, path), config
