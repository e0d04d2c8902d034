"""Triton kernels of GroupNorm with an optional fused SiLU, forward and backward.

How it works, and why: docs/ops.md, "How the Triton kernels work".
"""

import torch
import triton
import triton.language as tl

from ._tuning import autotune

MAX_TILE_CHANNELS = 64  # a tile's channels; a group of few pixels gives its channels the rest
# Forward and backward split groups along their pixels where there are too few of them (an official
# 1024x1024 config has 4 groups a sample at its first level) to keep a GPU busy: into ranges of a
# multiple of SPLIT_PIXELS pixels, until there are about MIN_PROGRAMS programs.
MIN_PROGRAMS = 4096
SPLIT_PIXELS = 1024


def tile_shape(HW, Cg, block):
    """(BP pixels, CB channels) of a tile of at most `block` elements, both powers of two."""
    bp = min(triton.next_power_of_2(HW), block // min(triton.next_power_of_2(Cg), MAX_TILE_CHANNELS))
    return bp, min(triton.next_power_of_2(Cg), block // bp)


def splits(programs, HW):
    """(S, PS): a group's pixels in S ranges of PS (S = 1, PS = HW: whole groups), for `programs`
    (sample, group) pairs."""
    S = max(1, min(triton.cdiv(MIN_PROGRAMS, programs), HW // SPLIT_PIXELS))
    if S == 1:
        return 1, HW
    PS = triton.cdiv(triton.cdiv(HW, S), SPLIT_PIXELS) * SPLIT_PIXELS
    return triton.cdiv(HW, PS), PS


def _tuned(fn):
    """Tile size BLOCK (elements) tuned per shape on a GPU (1024 under the interpreter); the tile's
    shape and the trip counts over a program's PS pixels of the group follow."""
    shape = lambda a: tile_shape(a["PS"], a["CG"], a["BLOCK"])  # noqa: E731
    tiles = triton.heuristics(
        {
            "BP": lambda a: shape(a)[0],
            "CB": lambda a: shape(a)[1],
            "P_TILES": lambda a: triton.cdiv(a["PS"], shape(a)[0]),
            "C_TILES": lambda a: triton.cdiv(a["CG"], shape(a)[1]),
        }
    )(fn)
    return autotune(
        gpu=[({"BLOCK": b}, w) for b in (1024, 2048, 4096) for w in (4, 8)],
        interpret=({"BLOCK": 1024}, 4),
        key=["HW", "PS", "C", "CG", "CHANNELS_LAST"],
    )(tiles)


@triton.jit
def _tile(
    n, g, p0, p1, tp, tc, C, HW, CG: tl.constexpr, BP: tl.constexpr, CB: tl.constexpr, CHANNELS_LAST: tl.constexpr
):
    """Tile (tp, tc) of pixels [p0, p1) of group (n, g): storage offsets [BP, CB], channels and
    channel mask [1, CB], in-range mask [BP, CB]."""
    p = p0 + tp * BP + tl.arange(0, BP)[:, None]
    c = tc * CB + tl.arange(0, CB)[None, :]
    ch = g * CG + c
    if CHANNELS_LAST:
        offs = (n.to(tl.int64) * HW + p) * C + ch
    else:
        offs = (n.to(tl.int64) * C + ch) * HW + p
    return offs, ch, c < CG, (p < p1) & (c < CG)


@triton.jit
def _load_x(x_ptr, o_row, OSC, offs, ch, cin, inside, acc_t, HAS_OFF: tl.constexpr):
    """x + o of a tile in acc_t (o_row: the sample's row of o), 0 outside the group's range."""
    x = tl.load(x_ptr + offs, mask=inside, other=0.0).to(acc_t)
    if HAS_OFF:
        x = tl.where(inside, x + tl.load(o_row + ch * OSC, mask=cin, other=0.0).to(acc_t), 0.0)
    return x


@triton.jit
def _xhat_tile(
    x_ptr,
    o_row,
    OSC,
    n,
    g,
    p0,
    p1,
    tp,
    tc,
    C,
    HW,
    mean,
    rstd,
    CG: tl.constexpr,
    BP: tl.constexpr,
    CB: tl.constexpr,
    CHANNELS_LAST: tl.constexpr,
    HAS_OFF: tl.constexpr,
):
    """(offsets, channels, channel mask, in-range mask, normalised x + o) of a tile of group (n, g)."""
    offs, ch, cin, inside = _tile(n, g, p0, p1, tp, tc, C, HW, CG, BP, CB, CHANNELS_LAST)
    xhat = (_load_x(x_ptr, o_row, OSC, offs, ch, cin, inside, mean.dtype, HAS_OFF) - mean) * rstd
    return offs, ch, cin, inside, xhat


@triton.jit
def _affine(y, w_ptr, b_ptr, ch, cin, HAS_W: tl.constexpr, HAS_B: tl.constexpr):
    """y w + b, per channel."""
    if HAS_W:
        y = y * tl.load(w_ptr + ch, mask=cin, other=0.0).to(y.dtype)
    if HAS_B:
        y = y + tl.load(b_ptr + ch, mask=cin, other=0.0).to(y.dtype)
    return y


@triton.jit
def _silu_grad(pre):
    s = tl.sigmoid(pre)
    return s * (1 + pre * (1 - s))


@triton.jit
def _stats(
    x_ptr,
    o_row,
    OSC,
    acc_ptr,
    n,
    g,
    p0,
    p1,
    C,
    HW,
    CG: tl.constexpr,
    BP: tl.constexpr,
    CB: tl.constexpr,
    P_TILES: tl.constexpr,
    C_TILES: tl.constexpr,
    CHANNELS_LAST: tl.constexpr,
    HAS_OFF: tl.constexpr,
):
    """(mean, centred sum of squares) of x + o over pixels [p0, p1) of group (n, g), in two passes,
    in the dtype acc_ptr points to."""
    acc_t = acc_ptr.dtype.element_ty
    total = tl.zeros((BP, CB), acc_t)
    for tc in range(C_TILES):
        for tp in range(P_TILES):
            offs, ch, cin, inside = _tile(n, g, p0, p1, tp, tc, C, HW, CG, BP, CB, CHANNELS_LAST)
            total += _load_x(x_ptr, o_row, OSC, offs, ch, cin, inside, acc_t, HAS_OFF)
    mean = tl.sum(total) / ((p1 - p0) * CG)
    total = tl.zeros((BP, CB), acc_t)
    for tc in range(C_TILES):
        for tp in range(P_TILES):
            offs, ch, cin, inside = _tile(n, g, p0, p1, tp, tc, C, HW, CG, BP, CB, CHANNELS_LAST)
            d = _load_x(x_ptr, o_row, OSC, offs, ch, cin, inside, acc_t, HAS_OFF) - mean
            total += tl.where(inside, d * d, 0.0)
    return mean, tl.sum(total)


@triton.jit
def _combine(part_ptr, ng, S, PS, HW, M, CG: tl.constexpr, S_P2: tl.constexpr):
    """(mean, centred sum of squares) of group ng from its S ranges' (Chan et al.), in a fixed order."""
    k = tl.arange(0, S_P2)
    valid = k < S
    m = tl.load(part_ptr + (ng * S + k) * 2, mask=valid, other=0.0)
    q = tl.load(part_ptr + (ng * S + k) * 2 + 1, mask=valid, other=0.0)
    count = tl.where(valid, (tl.minimum(k * PS + PS, HW) - k * PS) * CG, 0).to(m.dtype)
    mean = tl.sum(count * m) / M
    return mean, tl.sum(tl.where(valid, q + count * (m - mean) * (m - mean), 0.0))


@_tuned
@triton.jit
def _partial_stats_kernel(
    x_ptr,
    o_ptr,
    OSN,
    OSC,
    part_ptr,
    C,
    HW,
    G,
    PS,
    S,
    CHANNELS_LAST: tl.constexpr,
    CG: tl.constexpr,
    HAS_OFF: tl.constexpr,
    BLOCK: tl.constexpr,
    BP: tl.constexpr,
    CB: tl.constexpr,
    P_TILES: tl.constexpr,
    C_TILES: tl.constexpr,
):
    # Range s of group ng: its mean and centred sum of squares, for _combine.
    ng, s = tl.program_id(0), tl.program_id(1)
    p0 = s * PS
    o_row = o_ptr + (ng // G).to(tl.int64) * OSN
    mean, m2 = _stats(
        x_ptr,
        o_row,
        OSC,
        part_ptr,
        ng // G,
        ng % G,
        p0,
        tl.minimum(p0 + PS, HW),
        C,
        HW,
        CG,
        BP,
        CB,
        P_TILES,
        C_TILES,
        CHANNELS_LAST,
        HAS_OFF,
    )
    tl.store(part_ptr + (ng * S + s) * 2, mean)
    tl.store(part_ptr + (ng * S + s) * 2 + 1, m2)


@_tuned
@triton.jit
def _forward_kernel(
    x_ptr,
    w_ptr,
    b_ptr,
    o_ptr,
    OSN,
    OSC,
    y_ptr,
    mean_ptr,
    rstd_ptr,
    part_ptr,
    C,
    HW,
    G,
    M,
    PS,
    S,
    eps,
    HAS_W: tl.constexpr,
    HAS_B: tl.constexpr,
    HAS_OFF: tl.constexpr,
    SILU: tl.constexpr,
    CHANNELS_LAST: tl.constexpr,
    CG: tl.constexpr,
    S_P2: tl.constexpr,
    BLOCK: tl.constexpr,
    BP: tl.constexpr,
    CB: tl.constexpr,
    P_TILES: tl.constexpr,
    C_TILES: tl.constexpr,
):
    # Program (ng, s) writes range s of group ng; whole groups (S = 1) compute their statistics
    # here, split ones combine those of _partial_stats_kernel.
    ng, s = tl.program_id(0), tl.program_id(1)
    n, g = ng // G, ng % G
    o_row = o_ptr + n.to(tl.int64) * OSN
    if S_P2 == 1:
        mean, m2 = _stats(
            x_ptr, o_row, OSC, mean_ptr, n, g, 0, HW, C, HW, CG, BP, CB, P_TILES, C_TILES, CHANNELS_LAST, HAS_OFF
        )
    else:
        mean, m2 = _combine(part_ptr, ng, S, PS, HW, M, CG, S_P2)
    # NaN where the variance overflowed, as the reference gives (a zero would make each output its bias).
    rstd = tl.where(m2 / M == float("inf"), float("nan"), 1 / tl.sqrt(m2 / M + eps))
    p0 = s * PS
    p1 = tl.minimum(p0 + PS, HW)
    for tc in range(C_TILES):
        for tp in range(P_TILES):
            offs, ch, cin, inside, y = _xhat_tile(
                x_ptr, o_row, OSC, n, g, p0, p1, tp, tc, C, HW, mean, rstd, CG, BP, CB, CHANNELS_LAST, HAS_OFF
            )
            y = _affine(y, w_ptr, b_ptr, ch, cin, HAS_W, HAS_B)
            if SILU:
                y = y * tl.sigmoid(y)
            tl.store(y_ptr + offs, y.to(y_ptr.dtype.element_ty), mask=inside)
    if s == 0:
        tl.store(mean_ptr + ng, mean)
        tl.store(rstd_ptr + ng, rstd)


@triton.jit
def _dy_pre(
    dy_ptr, w_ptr, b_ptr, offs, ch, cin, inside, xhat, HAS_W: tl.constexpr, HAS_B: tl.constexpr, SILU: tl.constexpr
):
    """dL/d(affine output): dy, times silu' of the pre-activation when SiLU is fused; 0 outside the group."""
    dy = tl.load(dy_ptr + offs, mask=inside, other=0.0).to(xhat.dtype)
    if SILU:
        dy = dy * _silu_grad(_affine(xhat, w_ptr, b_ptr, ch, cin, HAS_W, HAS_B))
    return tl.where(inside, dy, 0.0)


@triton.jit
def _grad_sums(
    dy_ptr,
    x_ptr,
    w_ptr,
    b_ptr,
    o_row,
    OSC,
    n,
    g,
    p0,
    p1,
    mean,
    rstd,
    C,
    HW,
    HAS_W: tl.constexpr,
    HAS_B: tl.constexpr,
    HAS_OFF: tl.constexpr,
    SILU: tl.constexpr,
    CHANNELS_LAST: tl.constexpr,
    CG: tl.constexpr,
    BP: tl.constexpr,
    CB: tl.constexpr,
    P_TILES: tl.constexpr,
    C_TILES: tl.constexpr,
):
    """(sum of q, sum of q xhat) over pixels [p0, p1) of group (n, g), q = dL/dxhat."""
    sum_q = tl.zeros((BP, CB), mean.dtype)
    sum_qx = tl.zeros((BP, CB), mean.dtype)
    for tc in range(C_TILES):
        for tp in range(P_TILES):
            offs, ch, cin, inside, xhat = _xhat_tile(
                x_ptr, o_row, OSC, n, g, p0, p1, tp, tc, C, HW, mean, rstd, CG, BP, CB, CHANNELS_LAST, HAS_OFF
            )
            q = _affine(
                _dy_pre(dy_ptr, w_ptr, b_ptr, offs, ch, cin, inside, xhat, HAS_W, HAS_B, SILU),
                w_ptr,
                b_ptr,
                ch,
                cin,
                HAS_W,
                False,
            )
            sum_q += q
            sum_qx += q * xhat
    return tl.sum(sum_q), tl.sum(sum_qx)


@_tuned
@triton.jit
def _partial_grad_kernel(
    dy_ptr,
    x_ptr,
    mean_ptr,
    rstd_ptr,
    w_ptr,
    b_ptr,
    o_ptr,
    OSN,
    OSC,
    part_ptr,
    C,
    HW,
    G,
    PS,
    S,
    HAS_W: tl.constexpr,
    HAS_B: tl.constexpr,
    HAS_OFF: tl.constexpr,
    SILU: tl.constexpr,
    CHANNELS_LAST: tl.constexpr,
    CG: tl.constexpr,
    BLOCK: tl.constexpr,
    BP: tl.constexpr,
    CB: tl.constexpr,
    P_TILES: tl.constexpr,
    C_TILES: tl.constexpr,
):
    # Range s of group ng: its sums of q and q xhat, which _backward_kernel adds over ranges.
    ng, s = tl.program_id(0), tl.program_id(1)
    p0 = s * PS
    o_row = o_ptr + (ng // G).to(tl.int64) * OSN
    sum_q, sum_qx = _grad_sums(
        dy_ptr,
        x_ptr,
        w_ptr,
        b_ptr,
        o_row,
        OSC,
        ng // G,
        ng % G,
        p0,
        tl.minimum(p0 + PS, HW),
        tl.load(mean_ptr + ng),
        tl.load(rstd_ptr + ng),
        C,
        HW,
        HAS_W,
        HAS_B,
        HAS_OFF,
        SILU,
        CHANNELS_LAST,
        CG,
        BP,
        CB,
        P_TILES,
        C_TILES,
    )
    tl.store(part_ptr + (ng * S + s) * 2, sum_q)
    tl.store(part_ptr + (ng * S + s) * 2 + 1, sum_qx)


@_tuned
@triton.jit
def _backward_kernel(
    dy_ptr,
    x_ptr,
    mean_ptr,
    rstd_ptr,
    w_ptr,
    b_ptr,
    o_ptr,
    OSN,
    OSC,
    dx_ptr,
    dw_ptr,
    db_ptr,
    part_ptr,
    C,
    HW,
    G,
    M,
    PS,
    S,
    HAS_W: tl.constexpr,
    HAS_B: tl.constexpr,
    HAS_OFF: tl.constexpr,
    SILU: tl.constexpr,
    CHANNELS_LAST: tl.constexpr,
    CG: tl.constexpr,
    S_P2: tl.constexpr,
    BLOCK: tl.constexpr,
    BP: tl.constexpr,
    CB: tl.constexpr,
    P_TILES: tl.constexpr,
    C_TILES: tl.constexpr,
):
    # dx = rstd (q - mean(q) - xhat mean(q xhat)), q = dL/dxhat = dy' w, dy' = dL/d(pre-activation).
    # Program (ng, s) writes range s of group ng and sums dy' and dy' xhat per channel over it (db's
    # and dw's first stage). Whole groups (S = 1) sum q and q xhat here, in a pass that stores nothing,
    # so that a group of one tile is loaded once; split ones add those of _partial_grad_kernel.
    ng, s = tl.program_id(0), tl.program_id(1)
    n, g = ng // G, ng % G
    mean, rstd = tl.load(mean_ptr + ng), tl.load(rstd_ptr + ng)
    o_row = o_ptr + n.to(tl.int64) * OSN
    if S_P2 == 1:
        sum_q, sum_qx = _grad_sums(
            dy_ptr,
            x_ptr,
            w_ptr,
            b_ptr,
            o_row,
            OSC,
            n,
            g,
            0,
            HW,
            mean,
            rstd,
            C,
            HW,
            HAS_W,
            HAS_B,
            HAS_OFF,
            SILU,
            CHANNELS_LAST,
            CG,
            BP,
            CB,
            P_TILES,
            C_TILES,
        )
    else:
        k = tl.arange(0, S_P2)
        sum_q = tl.sum(tl.load(part_ptr + (ng * S + k) * 2, mask=k < S, other=0.0))
        sum_qx = tl.sum(tl.load(part_ptr + (ng * S + k) * 2 + 1, mask=k < S, other=0.0))
    mean_q = sum_q / M
    mean_qx = sum_qx / M
    p0 = s * PS
    p1 = tl.minimum(p0 + PS, HW)
    for tc in range(C_TILES):
        s_dy = tl.zeros((BP, CB), mean.dtype)
        s_dyx = tl.zeros((BP, CB), mean.dtype)
        for tp in range(P_TILES):
            offs, ch, cin, inside, xhat = _xhat_tile(
                x_ptr, o_row, OSC, n, g, p0, p1, tp, tc, C, HW, mean, rstd, CG, BP, CB, CHANNELS_LAST, HAS_OFF
            )
            dy = _dy_pre(dy_ptr, w_ptr, b_ptr, offs, ch, cin, inside, xhat, HAS_W, HAS_B, SILU)
            q = _affine(dy, w_ptr, b_ptr, ch, cin, HAS_W, False)
            dx = rstd * (q - mean_q - xhat * mean_qx)
            tl.store(dx_ptr + offs, dx.to(dx_ptr.dtype.element_ty), mask=inside)
            s_dy += dy
            s_dyx += dy * xhat
        c = tc * CB + tl.arange(0, CB)
        part = (n.to(tl.int64) * S + s) * C + g * CG + c
        tl.store(db_ptr + part, tl.sum(s_dy, axis=0), mask=c < CG)
        tl.store(dw_ptr + part, tl.sum(s_dyx, axis=0), mask=c < CG)


def _shape(x, num_groups):
    N, C = x.shape[:2]
    HW = x.numel() // (N * C)
    return N, C, HW, C // num_groups


def _offset(offset, x):
    """(pointer, row stride, column stride) of the offset as the kernels read it (x: not read without one)."""
    return (x, 0, 0) if offset is None else (offset, *offset.stride())


def forward(x, num_groups, weight, bias, eps, silu, channels_last, acc, offset=None):
    """(y, mean [N, G], rstd [N, G]) of x + offset (offset [N, C] at any strides, or None) for x dense in
    the layout `channels_last` says."""
    N, C, HW, Cg = _shape(x, num_groups)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    y = torch.empty_like(x, memory_format=fmt)
    mean = torch.empty((N, num_groups), dtype=acc, device=x.device)
    rstd = torch.empty_like(mean)
    S, PS = splits(N * num_groups, HW)
    o, OSN, OSC = _offset(offset, x)
    part = mean  # not read where groups are whole
    if S > 1:
        part = torch.empty((N * num_groups, S, 2), dtype=acc, device=x.device)
        _partial_stats_kernel[(N * num_groups, S)](
            x,
            o,
            OSN,
            OSC,
            part,
            C,
            HW,
            num_groups,
            PS,
            S,
            CHANNELS_LAST=channels_last,
            CG=Cg,
            HAS_OFF=offset is not None,
        )
    _forward_kernel[(N * num_groups, S)](
        x,
        weight if weight is not None else x,
        bias if bias is not None else x,
        o,
        OSN,
        OSC,
        y,
        mean,
        rstd,
        part,
        C,
        HW,
        num_groups,
        Cg * HW,
        PS,
        S,
        eps,
        HAS_W=weight is not None,
        HAS_B=bias is not None,
        HAS_OFF=offset is not None,
        SILU=silu,
        CHANNELS_LAST=channels_last,
        CG=Cg,
        S_P2=triton.next_power_of_2(S),
    )
    return y, mean, rstd


def backward(dy, x, mean, rstd, weight, bias, silu, channels_last, offset=None):
    """(dx, dw, db) of the forward of x + offset: dw and db summed over samples in a fixed order (whether or
    not there are weight and bias)."""
    N, C, HW, Cg = _shape(x, mean.shape[1])
    G = mean.shape[1]
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    dx = torch.empty_like(x, memory_format=fmt)
    S, PS = splits(N * G, HW)
    dw_part = torch.empty((N, S, C), dtype=mean.dtype, device=x.device)  # per (sample, range, channel)
    db_part = torch.empty_like(dw_part)
    w = weight if weight is not None else x
    b = bias if bias is not None else x
    o, OSN, OSC = _offset(offset, x)
    flags = dict(
        HAS_W=weight is not None,
        HAS_B=bias is not None,
        HAS_OFF=offset is not None,
        SILU=silu,
        CHANNELS_LAST=channels_last,
        CG=Cg,
    )
    part = mean  # not read where groups are whole
    if S > 1:
        part = torch.empty((N * G, S, 2), dtype=mean.dtype, device=x.device)
        _partial_grad_kernel[(N * G, S)](dy, x, mean, rstd, w, b, o, OSN, OSC, part, C, HW, G, PS, S, **flags)
    _backward_kernel[(N * G, S)](
        dy,
        x,
        mean,
        rstd,
        w,
        b,
        o,
        OSN,
        OSC,
        dx,
        dw_part,
        db_part,
        part,
        C,
        HW,
        G,
        Cg * HW,
        PS,
        S,
        S_P2=triton.next_power_of_2(S),
        **flags,
    )
    return dx, dw_part.sum((0, 1)).to(x.dtype), db_part.sum((0, 1)).to(x.dtype)
