"""Checkpoints of the official code (score_sde_pytorch's utils.save_checkpoint), read safely, and
weights as safetensors.

An official .pth is {'model': state dict with 'module.' prefixes, 'ema': {'decay', 'num_updates',
'shadow_params': [one tensor per trainable parameter, in order]}, 'optimizer', 'step'}. It is read
with torch.load(weights_only=True) and nothing else: a file that asks to run code is refused.
A .safetensors file holds one set of weights (prefix-free) and the config as JSON in its metadata.
"""

import functools
import hashlib
import json
import os
import pickle
import re
import tempfile
import zipfile

import torch

from . import configs as configs_lib
from .models import MODELS, create_model
from .sde import VESDE, VPSDE, subVPSDE


class CheckpointError(ValueError):
    """A checkpoint that cannot be read, or that does not fit the model."""


def read(path):
    """The object in a .pth file, read with weights_only=True (refusing pickled code)."""
    with open(path, "rb") as fh:
        head = fh.read(2)
    if head != b"PK" and head[:1] != b"\x80":  # torch's zip archive, or its legacy pickle format
        raise CheckpointError(f"{path}: not a readable checkpoint: neither a torch zip archive nor a pickle")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"WeightsUnpickler error:\s*(.*?)(?: was not an allowed| Please use|\n\n|$)", str(e), re.S)
        what = found.group(1).strip() if found else "content beyond tensors and plain containers"
        raise CheckpointError(
            f"{path}: refused: the file asks to unpickle code or objects that weights_only "
            f"loading does not allow ({what}); fastsde never loads such files"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile) as e:
        raise CheckpointError(
            f"{path}: not a readable checkpoint (corrupt or truncated?): {str(e).splitlines()[0]}"
        ) from None


def strip_prefix(state):
    """The state dict without DataParallel's 'module.' prefix."""
    return {k[len("module.") :] if k.startswith("module.") else k: v for k, v in state.items()}


def _describe_mismatch(model, state):
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k}: checkpoint {tuple(state[k].shape)}, model {tuple(own[k].shape)}"
        for k in own
        if k in state and state[k].shape != own[k].shape
    ]
    parts = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", shapes)):
        if items:
            more = f" (+{len(items) - 5} more)" if len(items) > 5 else ""
            parts.append(f"{len(items)} {label}: {', '.join(items[:5])}{more}")
    return "; ".join(parts)


def build_checked(make, state, path):
    """make() (a module) once `state`'s keys and shapes are known to fit it: it is first built on the
    meta device, which allocates nothing, so that a config that does not fit the weights (an
    untrusted file's, say) cannot make fastsde allocate what it describes. Raises CheckpointError."""
    with torch.device("meta"):
        shell = make()
    problem = _describe_mismatch(shell, state)
    if problem:
        raise CheckpointError(
            f"{path}: the weights do not fit the {type(shell).__name__} that the config describes: {problem}"
        )
    return make()


def load_state(model, state, ema=None):
    """Loads a (prefix-free) state dict strictly, then, if given, the official EMA shadow parameters
    onto the trainable parameters in order. Raises CheckpointError naming what does not fit."""
    problem = _describe_mismatch(model, state)
    if problem:
        raise CheckpointError(
            f"the checkpoint does not fit the {type(model).__name__} built from the config: {problem}"
        )
    model.load_state_dict(state, strict=True)
    if ema is None:
        return model
    shadow = ema.get("shadow_params") if isinstance(ema, dict) else None
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not isinstance(shadow, (list, tuple)) or len(shadow) != len(trainable):
        got = len(shadow) if isinstance(shadow, (list, tuple)) else type(shadow).__name__
        raise CheckpointError(
            f"ema.shadow_params has {got} entries; the model has {len(trainable)} trainable parameters"
        )
    bad = [
        f"{n}: ema {tuple(s.shape)}, model {tuple(p.shape)}"
        for (n, p), s in zip(trainable, shadow)
        if s.shape != p.shape
    ]
    if bad:
        raise CheckpointError(f"ema.shadow_params do not fit the model's parameters: {', '.join(bad[:5])}")
    with torch.no_grad():
        for (_, p), s in zip(trainable, shadow):
            p.copy_(s)
    return model


def sde_from_config(config, N=None):
    """The SDE that config.training.sde names, with the config's parameters and N = num_scales
    unless N is given (VE for the NCSN / NCSNv2 configs, which upstream leaves without training.sde)."""
    m, name = config.model, config.training.get("sde", "vesde").lower()
    N = m.num_scales if N is None else N
    if name == "vesde":
        return VESDE(sigma_min=m.sigma_min, sigma_max=m.sigma_max, N=N)
    if name == "vpsde":
        return VPSDE(beta_min=m.beta_min, beta_max=m.beta_max, N=N)
    if name == "subvpsde":
        return subVPSDE(beta_min=m.beta_min, beta_max=m.beta_max, N=N)
    raise ValueError(f"training.sde must be vesde, vpsde or subvpsde, got {name!r}")


def signature(state):
    """{key: shape} of a state dict."""
    return {k: tuple(v.shape) for k, v in state.items()}


@functools.lru_cache(maxsize=None)
def official_signature(name):
    """Keys and shapes of the network of official config `name` (built on the meta device, once)."""
    with torch.device("meta"):
        return signature(create_model(configs_lib.get(name)).state_dict())


def detect_config(state):
    """The name of the built-in config whose network has exactly the keys and shapes of `state`
    (sigmas included, which fixes sigma_max and the number of scales). Raises CheckpointError if
    none fits, or if several do that differ in more than the dataset (a VP, sub-VP and discrete VE
    network can be identical in shape; then the config must be given)."""
    want = signature(state)
    sigmas = state.get("sigmas")
    return pick_config(
        lambda name, config: (
            official_signature(name) == want
            and (sigmas is None or abs(float(sigmas[0]) - config.model.sigma_max) <= 1e-6 * config.model.sigma_max)
        )
    )


def pick_config(fits):
    """The one official config (by name) for which fits(name, config) holds, among those of networks
    fastsde builds. Raises CheckpointError if none does, or several that differ in more than the data."""
    found = []
    for name in configs_lib.names():
        config = configs_lib.get(name)
        if config.model.name.lower() in MODELS and fits(name, config):
            found.append((name, config))
    if not found:
        raise CheckpointError(
            "no official config fits this checkpoint's keys and shapes; give its config "
            "(config= in Python, --config on the command line)"
        )
    first = found[0][1]
    same = all(
        c.model == first.model
        and c.training.sde == first.training.sde
        and c.training.continuous == first.training.continuous
        for _, c in found
    )
    if not same:
        raise CheckpointError(
            f"several official configs fit this checkpoint: {', '.join(n for n, _ in found)}; "
            "give its config (config= in Python, --config on the command line): the "
            "weights alone do not tell the SDE apart"
        )
    return found[0][0]


def _safetensors():
    try:
        import safetensors.torch
    except ImportError as e:
        raise ImportError("safetensors files need the safetensors package (pip install safetensors)") from e
    return safetensors.torch


def read_safetensors(path):
    """(state dict, config dict or None) of a .safetensors file written by save_safetensors."""
    st = _safetensors()
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
        state = st.load_file(str(path))
    except (SafetensorError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{path}: not a readable safetensors file: {str(e).splitlines()[0]}") from None
    config = json.loads(meta["fastsde_config"]) if "fastsde_config" in meta else None
    return state, config


def write_safetensors(path, state, config=None):
    """Writes tensors (a dict) to a .safetensors file, the config as JSON in its metadata, atomically."""
    st = _safetensors()
    meta = {"fastsde_config": json.dumps(config)} if config is not None else None
    state = {k: v.detach().contiguous().cpu() for k, v in state.items()}
    atomic_write(path, lambda tmp: st.save_file(state, tmp, metadata=meta))


def save_safetensors(path, model, config=None, dtype=None):
    """Writes the model's weights (and the config, as metadata) to a .safetensors file, atomically;
    floating-point tensors in `dtype` if given (loading casts them back to the model's dtype)."""
    write_safetensors(
        path,
        {k: v.to(dtype) if dtype is not None and v.is_floating_point() else v for k, v in model.state_dict().items()},
        config,
    )


def load_checkpoint(path, config=None, use_ema=True, device="cpu"):
    """(model, sde, config) of an official checkpoint, a plain state dict, or a .safetensors file.

    config: a Config, dict, JSON path or official config name. None: the one embedded in a
    .safetensors file, else recognised from the checkpoint's keys and shapes.
    use_ema: the EMA weights (what upstream samples with), else the raw ones.
    Returns the model in eval mode on `device`.
    """
    if str(path).endswith(".safetensors"):
        ckpt, embedded = read_safetensors(path)
        config = embedded if config is None else config
    else:
        ckpt = read(path)
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{path}: expected a dict, got {type(ckpt).__name__}")
    official = "model" in ckpt and isinstance(ckpt["model"], dict)
    state = strip_prefix(ckpt["model"] if official else ckpt)
    if config is None:
        config = detect_config(state)
    config = configs_lib.load(config)
    if use_ema and official and "ema" not in ckpt:
        raise CheckpointError(f"{path}: has no 'ema' entry; pass use_ema=False for the raw weights")
    model = build_checked(lambda: create_model(config), state, path)
    load_state(model, state, ckpt["ema"] if use_ema and official else None)
    return model.to(device).eval(), sde_from_config(config), config


def digest(module):
    """A SHA-256 hex digest of `module`'s state (names, dtypes, shapes and bytes): equal for equal
    weights, whatever file or device they came from."""
    h = hashlib.sha256()
    for name, t in module.state_dict().items():
        h.update(f"{name} {t.dtype} {tuple(t.shape)};".encode())
        h.update(t.detach().reshape(-1).cpu().contiguous().view(torch.uint8).numpy())
    return h.hexdigest()


def atomic_write(path, write):
    """Calls write(tmp) for a temporary file beside `path`, fsyncs it, renames it over `path` and
    fsyncs the folder, so that a crash leaves the old file or the new one, never a torn one."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=os.path.basename(path))
    os.close(fd)
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 would make the result private to this user
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(e, OSError) and e.errno is not None and e.filename is None:  # e.g. a full disk
            raise OSError(e.errno, f"could not write {path}: {e.strerror}") from e
        raise
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def atomic_write_bytes(path, data):
    """Writes bytes (or a str, as UTF-8) to `path`, atomically (see atomic_write)."""

    def write(tmp):
        with open(tmp, "wb") as fh:
            fh.write(data.encode() if isinstance(data, str) else data)

    atomic_write(path, write)


def atomic_save(obj, path):
    """torch.save(obj, path), atomically (see atomic_write)."""
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


def save_checkpoint(path, model, ema_params=None, optimizer=None, step=0, ema_decay=0.999, num_updates=0, extra=None):
    """Writes `model` in the official layout (so upstream's restore_checkpoint reads it):
    'module.'-prefixed weights, the EMA shadow parameters (default: the model's own trainable
    parameters), an Adam state (default: a fresh one over the model) and the step; `extra` (a dict
    of tensors, numbers and strings) goes under the key 'fastsde', which upstream ignores. Atomic."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    shadow = [p.detach().clone() for p in (trainable if ema_params is None else ema_params)]
    if len(shadow) != len(trainable):
        raise ValueError(f"ema_params: {len(shadow)} tensors for {len(trainable)} trainable parameters")
    optimizer = optimizer or torch.optim.Adam(trainable)
    state = {
        "optimizer": optimizer.state_dict(),
        "model": {f"module.{k}": v for k, v in model.state_dict().items()},
        "ema": {"decay": ema_decay, "num_updates": num_updates, "shadow_params": shadow},
        "step": step,
    }
    if extra is not None:
        state["fastsde"] = extra
    atomic_save(state, path)
