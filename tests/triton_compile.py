"""The Triton kernels of kernels/ compiled for a real GPU on a machine without one: the check that
TRITON_INTERPRET=1 cannot make (the interpreter runs the kernels' Python, never Triton's compiler).

A stand-in for Triton's CUDA driver reports a GPU of the given compute capability and compiles
every launch through the whole pipeline (Triton IR, LLVM, PTX, ptxas to a cubin) without running
it; the autotuner's timing only compiles, so every config is built. Each launch site of kernels/ is
called as fastsde.ops calls it, for every dtype, both layouts and each compile-time branch.

    python tests/triton_compile.py ARCH [--sass] [OP ...]   # ARCH e.g. 90; OP group_norm, upfirdn2d,
                                                            # pc_update (default all); prints JSON

The JSON: "cubins", one entry per cubin: kernel name, arch, its compile-time arguments and
num_warps, and the cubin's resource usage as cuobjdump reads it (registers, and per thread local and
stack bytes, where spilled registers go; static shared memory), and with --sass the static count of
its machine instructions and of its global loads by width (LDG.E.128: 16-byte vectors), a cost that
a machine without a GPU can read; "autotune_configs", how many configs each autotuned kernel has.
Must run in a process of its own: TRITON_INTERPRET must be unset when Triton is imported.
"""

import collections
import importlib
import json
import os
import re
import subprocess
import sys
import tempfile
from types import SimpleNamespace

import torch
import triton
import triton.testing
from triton.backends.compiler import GPUTarget

from fastsde.ops._common import acc_dtype

DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


class CompileOnlyDriver:
    """Triton's active driver for a GPU that is not there: targets `arch`, keeps each cubin, and
    launches nothing."""

    def __init__(self, arch):
        self.target = GPUTarget("cuda", arch, 32)
        self.cubins = []
        # Hopper's and Ampere's per-block limit (227 KiB, 163 KiB): a config over it fails as on the GPU.
        props = {
            "max_shared_mem": 232448 if arch >= 90 else 166912,
            "multiprocessor_count": 132,
            "max_num_regs": 65536,
            "warpSize": 32,
        }
        self.utils = SimpleNamespace(load_binary=self._load_binary, get_device_properties=lambda device: props)
        self.launcher_cls = self._launcher
        self._config = None

    @staticmethod
    def is_active():
        return True

    def get_current_device(self):
        return 0

    def get_current_stream(self, device=None):
        return 0

    def get_current_target(self):
        return self.target

    def get_active_torch_device(self):
        return torch.device("cpu")

    def get_benchmarker(self):
        return compile_only_bench

    def map_python_to_cpp_type(self, ty):
        from triton.backends.nvidia.driver import ty_to_cpp

        return ty_to_cpp(ty)

    def _launcher(self, src, metadata):  # Triton makes it just before loading the cubin
        names = src.fn.arg_names
        meta = {names[k[0]]: v for k, v in src.constants.items() if src.signature.get(names[k[0]]) == "constexpr"}
        self._config = dict(meta, num_warps=metadata.num_warps)
        return lambda *args, **kwargs: None

    def _load_binary(self, name, cubin, shared, device):
        self.cubins.append((name, self._config, cubin))
        return None, None, 0, 0, 1024  # module, function, registers, spills, threads per block


def compile_only_bench(fn, *args, quantiles=None, **kwargs):
    """The autotuner's timing: one call, which compiles the config; every config ties."""
    fn()
    return [1.0] * len(quantiles) if quantiles else 1.0


def group_norm_launches(kernels):
    gn = kernels.group_norm
    # Groups of 4 channels (one tile) in every dtype, with and without an offset; in float32, groups
    # of 96 channels (two channel tiles) and groups of 2304 pixels, which the forward and the
    # backward split, with and without an offset.
    cases = [
        (dtype, (2, 64, 6, 6), 16, cl, silu, affine, offset)
        for dtype in DTYPES
        for cl, silu, affine, offset in [
            (False, True, True, False),
            (True, True, True, False),
            (False, False, False, False),
            (True, False, True, False),
            (True, True, True, True),
            (False, True, True, True),
        ]
    ]
    cases += [
        (torch.float32, shape, groups, cl, True, True, offset)
        for cl in (False, True)
        for offset in (False, True)
        for shape, groups in [((2, 96, 6, 6), 1), ((1, 16, 48, 48), 4)]
    ]
    for dtype, shape, groups, cl, silu, affine, offset in cases:
        fmt = torch.channels_last if cl else torch.contiguous_format
        C = shape[1]
        x = torch.randn(*shape, dtype=dtype).contiguous(memory_format=fmt)
        w = torch.randn(C, dtype=dtype) if affine else None
        b = torch.randn(C, dtype=dtype) if affine else None
        o = torch.randn(shape[0], C, dtype=dtype) if offset else None
        y, mean, rstd = gn.forward(x, groups, w, b, 1e-6, silu, cl, acc_dtype(x), o)
        gn.backward(torch.randn_like(y), x, mean, rstd, w, b, silu, cl, o)


def upfirdn2d_launches(kernels):
    # up 2, down 2, the blur (the backward of each is another of them) with the separable and the 2-D
    # [1, 3, 3, 1], and a general case (3x2 taps, up 4, down 2); each input size gives a 16x16 output.
    # The autotuner keys on up and down too, so each (up, down) builds every config; the 2-D filter,
    # a key of its own neither, builds the one that the separable case's timing picked.
    fir = torch.tensor([1.0, 3.0, 3.0, 1.0]) / 8
    cases = [
        (8, fir, 2, 1, (2, 1, 2, 1)),
        (32, fir, 1, 2, (1, 1, 1, 1)),
        (15, fir, 1, 1, (2, 2, 2, 2)),
        (8, torch.outer(fir, fir), 2, 1, (2, 1, 2, 1)),
        (8, torch.rand(3, 2), 4, 2, (-1, 1, 2, -1)),
    ]
    for dtype in DTYPES:
        for cl in (False, True):
            for size, f, up, down, pad in cases:
                x = torch.randn(2, 8, size, size, dtype=dtype)
                x = x.contiguous(memory_format=torch.channels_last) if cl else x
                kernels.upfirdn2d.upfirdn2d(x, f, up, down, pad, 16, 16, cl, acc_dtype(x))


def pc_update_launches(kernels):
    pc = kernels.pc_update
    for dtype in DTYPES:
        for fmt in (torch.contiguous_format, torch.channels_last):
            x = torch.randn(3, 4, 5, 6, dtype=dtype).contiguous(memory_format=fmt)
            s, acc = torch.randn_like(x), acc_dtype(x)
            a, b, c = (torch.rand(3, dtype=acc) for _ in range(3))
            key = torch.tensor([[1, 0], [2, 5], [3, 9]])
            for noise, k in [(torch.randn_like(x), None), (None, key), (None, None)]:
                pc.affine(x, s, noise, k, a, b, c, fmt)
                if noise is not None or k is not None:
                    pc.squared_norms(s, noise, k, acc, fmt)


def cuobjdump(cubin, *flags):
    """What Triton's cuobjdump prints for a cubin with `flags`."""
    tool = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    with tempfile.NamedTemporaryFile(suffix=".cubin") as fh:
        fh.write(cubin)
        fh.flush()
        return subprocess.run([tool, *flags, fh.name], capture_output=True, text=True, check=True).stdout


def cubin_resources(cubin):
    """{'registers', 'local_bytes', 'stack_bytes', 'shared_bytes'} of a cubin, read by cuobjdump."""
    text = cuobjdump(cubin, "--dump-resource-usage")
    usage = dict(re.findall(r"\b(REG|STACK|SHARED|LOCAL):(\d+)", text.split("Function", 1)[1]))
    return {
        "registers": int(usage["REG"]),
        "local_bytes": int(usage["LOCAL"]),
        "stack_bytes": int(usage["STACK"]),
        "shared_bytes": int(usage["SHARED"]),
    }


def cubin_sass(cubin):
    """{'instructions', 'global_loads': {opcode: count}} of a cubin's SASS (predicated ones included)."""
    ops = re.findall(r"/\*[0-9a-f]{4}\*/\s+(?:@!?U?P[T0-9]+\s+)?([A-Z][A-Z0-9_.]*)", cuobjdump(cubin, "-sass"))
    loads = collections.Counter(op for op in ops if op.startswith("LDG"))
    return {"instructions": len(ops), "global_loads": dict(loads)}


LAUNCHES = {"group_norm": group_norm_launches, "upfirdn2d": upfirdn2d_launches, "pc_update": pc_update_launches}


def main(arch, ops, sass=False):
    if os.environ.get("TRITON_INTERPRET") == "1":
        raise SystemExit("triton_compile.py: unset TRITON_INTERPRET (the interpreter compiles nothing)")
    driver = CompileOnlyDriver(arch)
    triton.runtime.driver.set_active(driver)
    triton.testing.do_bench = compile_only_bench  # what kernels/_tuning.py times configs with
    kernels = SimpleNamespace(**{op: importlib.import_module(f"fastsde.kernels.{op}") for op in LAUNCHES})
    for op in ops:
        LAUNCHES[op](kernels)
    entries = [
        {
            "kernel": name,
            "arch": arch,
            "config": config,
            **cubin_resources(cubin),
            **(cubin_sass(cubin) if sass else {}),
        }
        for name, config, cubin in driver.cubins
    ]
    json.dump({"cubins": entries, "autotune_configs": autotune_configs(kernels, ops)}, sys.stdout)


def autotune_configs(kernels, ops):
    """{kernel name: how many configs its autotuner has} for the autotuned kernels of `ops`."""
    counts = {}
    for op in ops:
        for obj in vars(getattr(kernels, op)).values():
            if isinstance(obj, triton.runtime.Autotuner):
                fn = obj
                while not isinstance(fn, triton.runtime.JITFunction):
                    fn = fn.fn
                counts[fn.__name__] = len(obj.configs)
    return counts


if __name__ == "__main__":
    args = sys.argv[2:]
    main(int(sys.argv[1]), [a for a in args if a != "--sass"] or list(LAUNCHES), sass="--sass" in args)
