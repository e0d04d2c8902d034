"""Autotuning of the Triton kernels, and the shape of their row tiles: a few configs on a GPU,
picked per shape by timing them (short warmup and repetitions, so that the first call of a new
shape stays cheap); one config under the interpreter (TRITON_INTERPRET=1), where timing means
nothing and every launch is slow."""
import os

import triton

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"


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
    names `key`; under the interpreter the one (meta-parameters, num_warps) `interpret`."""
    chosen = [interpret] if INTERPRET else gpu
    return triton.autotune([triton.Config(dict(meta), num_warps=warps) for meta, warps in chosen], key=key,
                           do_bench=_bench)
