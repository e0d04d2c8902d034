"""Autotuning of the Triton kernels: a few configs on a GPU, picked per shape by timing them (short
warmup and repetitions, so that the first call of a new shape stays cheap); one config under the
interpreter (TRITON_INTERPRET=1), where timing means nothing and every launch is slow."""
import os

import triton

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"


def _bench(fn, quantiles):
    import triton.testing
    return triton.testing.do_bench(fn, warmup=5, rep=20, quantiles=quantiles)


def autotune(gpu, interpret, key):
    """triton.autotune over `gpu`, a list of (meta-parameters, num_warps), keyed by the argument
    names `key`; under the interpreter the one (meta-parameters, num_warps) `interpret`."""
    chosen = [interpret] if INTERPRET else gpu
    return triton.autotune([triton.Config(dict(meta), num_warps=warps) for meta, warps in chosen], key=key,
                           do_bench=_bench)
