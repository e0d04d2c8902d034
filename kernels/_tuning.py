"""Autotuning of the Triton kernels, and the shape of their row tiles: a few configs on a GPU,
picked per shape by timing them (short warmup and repetitions, so that the first call of a new
shape stays cheap); one config under the interpreter (TRITON_INTERPRET=1), where timing means
nothing and every launch is slow. FASTSDE_TRITON_AUTOTUNE=0 (read at import) keeps a GPU to the
first config: the GPU tests set it, since tuning each of their hundreds of shapes would compile
every config of each (tests/test_triton_configs.py runs every config instead)."""

import os

import triton

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
TUNE = os.environ.get("FASTSDE_TRITON_AUTOTUNE", "1") != "0"


def row_tile(ncols, block, max_cols=None):
    """(ROWS, COLS) of a tile of `block` elements over rows of `ncols` columns: powers of two, the
    columns as many as a row has (at most max_cols), the rows the rest."""
    cols = min(triton.next_power_of_2(ncols), max_cols or block, block)
    return block // cols, cols


def _bench(fn, quantiles):
    import triton.testing

    return triton.testing.do_bench(fn, warmup=5, rep=20, quantiles=quantiles)


def autotune(gpu, interpret, key):
    """triton.autotune over `gpu`, a list of (meta-parameters, num_warps), keyed by the argument
    names `key`; under the interpreter the one (meta-parameters, num_warps) `interpret`. The
    autotuner keeps the whole list as its gpu_configs."""
    configs = lambda pairs: [triton.Config(dict(meta), num_warps=warps) for meta, warps in pairs]  # noqa: E731

    def decorate(fn):
        tuner = triton.autotune(
            configs([interpret] if INTERPRET else gpu if TUNE else gpu[:1]), key=key, do_bench=_bench
        )(fn)
        tuner.gpu_configs = configs(gpu)
        return tuner

    return decorate
