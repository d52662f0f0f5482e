"""Triton kernels of the fused MLP path (imported only where Triton is installed; see `kernels.fused`).

One program fits one field: it keeps the field's weights in registers, walks its points in chunks of
`BN`, runs the forward pass, the squared error and the backward pass of each chunk without writing an
activation to memory, accumulates the weight gradients in fp32 registers and, at the end, applies Adam
to the field's parameters in place. Per step and field, memory traffic is the parameters and Adam
moments (read and written once), the targets and the coordinates (shared by every field, so cached).

With `SPLIT` the points of a field are shared among several programs, which add their partial
gradients into `G` atomically (one large field); Adam is then a separate elementwise pass (`fused_adam`).

Layout of one field's packed parameters (fp32): for each layer, its weight as (in, out) row-major, then
its bias. Layers: `IN0 → H` (activation scale `W_FIRST`), `NH − 1` times `H → H` (`W_HIDDEN`), `H → C`.
The first layer reads the coordinates x (`ENC` 0, IN0 = D), or a Fourier encoding of them computed in the
kernel from a per-field matrix A (F, D) (`ENC` 1: γ = [cos(s·xAᵀ), sin(s·xAᵀ)], Gaussian random features
with s = 2π; `ENC` 2: γ = [x, cos(xAᵀ), sin(xAᵀ)], NeRF's positional encoding); its weight's rows follow γ's
order, the first `DI` of them for x (D, or 0 for ENC 1), then F for the cosines, then F for the sines.
Padded sizes `FP`, `HP`, `CP` are powers of two ≥ 16 (tensor-core tiles), and so is `DP` where the
coordinates enter a tile; a `DP` below 16 (2-D fields without an encoding, `kernels.fused.NARROW_DIMS`) takes
the first layer as one outer product per coordinate instead (`_mm_coords`, `_coords_grad`). Padding is
masked on load.
Activations: 0 sine sin(w z); 1 Gaussian exp(−(w z)²); 2 ReLU. With `FOLD` a layer keeps its scaled
pre-activation s = w z, made as one multiply-add with the bias scaled once (`_pre`, `_bias`; the first layer's
held weight is scaled too), so neither the activation nor its derivative multiplies by w again: 1,584 → 1,531
instructions in the chunk loop of SIREN 2×32 bf16 (no spill with SUMS 2, where z spills 12 B), 1,831 → 1,735
at 3×64, which nevertheless ran 4.5% slower on an H100 (`kernels.fused.launch_constants` takes it for one-warp
blocks only; BENCHMARKS.md).
Matrix precision `MM`: 0 fp32 (IEEE, on the CUDA cores), 1 TF32 (operands rounded to nearest), 2 bf16 operands,
3 bf16 rounding emulated in fp32 (for the interpreter), 4 fp32 as three TF32 products on the tensor cores
(Triton's tf32x3: each operand split into a TF32 part and its remainder, hi·hi + hi·lo + lo·hi, about fp32's
accuracy; the fp32 precision's hidden layers, as IEEE products there ran 5.5-14× slower than the reference
path on an H200). The first layer is IEEE fp32 (its outputs are phases), or with `FIRST` (fields without an
encoding) a TF32×3 tile on the tensor cores: the coordinates with a column of ones at D, the weight's row D
being the bias (which follows the weight in the packed layout), so that one product adds the bias and the
gradient's product gives the bias's gradient as its row D. Accumulation, loss and Adam fp32.
"""

from __future__ import annotations

import os

import triton
import triton.language as tl

from fieldlab.kernels.fused import compiler_prepared

INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
"""Whether these kernels were decorated for Triton's interpreter (CPU) rather than compiled."""

compiler_prepared()  # every compile and launch of these kernels imports this module first


@triton.jit
def _bias(b, w, ACT: tl.constexpr, FOLD: tl.constexpr):
    """A bias as `_pre` adds it: with FOLD, times the activation's scale w (sine, Gaussian); else, or for
    ReLU, unchanged."""
    if ACT == 2 or FOLD == 0:
        return b
    else:
        return w * b


@triton.jit
def _pre(product, bias, w, ACT: tl.constexpr, FOLD: tl.constexpr):
    """A layer's pre-activation as the kernels keep it: with FOLD (sine, Gaussian) the scaled s = w·(product
    + b) as one multiply-add, product·w + (w·b) with `bias` = `_bias(b)`, which the activation and its
    derivative read without multiplying by w again; else z = product + b."""
    if ACT == 2 or FOLD == 0:
        return product + bias[None, :]
    else:
        return product * w + bias[None, :]


@triton.jit
def _act(s, w, ACT: tl.constexpr, FAST: tl.constexpr, FOLD: tl.constexpr):
    """The activation of a pre-activation kept by `_pre`: sin(w z), exp(−(w z)²), or max(z, 0)."""
    if FOLD == 0 and ACT != 2:
        s = w * s
    if ACT == 0:
        if FAST:
            return tl.extra.cuda.libdevice.fast_sinf(s)
        return tl.sin(s)
    elif ACT == 1:
        return tl.exp(-s * s)
    else:
        return tl.maximum(s, 0.0)


@triton.jit
def _act_grad(s, a, w, ACT: tl.constexpr, FAST: tl.constexpr, FOLD: tl.constexpr):
    """d act / dz at a pre-activation kept by `_pre`, given a = act: w cos(w z), −2 w² z a, or the step."""
    if ACT == 0:
        if FOLD == 0:
            s = w * s
        if FAST:
            return w * tl.extra.cuda.libdevice.fast_cosf(s)
        return w * tl.cos(s)
    elif ACT == 1:
        if FOLD == 0:
            return -2.0 * w * w * s * a
        return -2.0 * w * s * a
    else:  # ReLU: 0 at z = 0, as torch
        return tl.where(s > 0, 1.0, 0.0)


@triton.jit
def _mm(a, b, MM: tl.constexpr):
    """a @ b with fp32 accumulation at matrix precision MM."""
    if MM == 0:
        return tl.dot(a, b, input_precision="ieee")
    elif MM == 4:
        return tl.dot(a, b, input_precision="tf32x3")
    elif MM == 1:  # rounded to TF32 here: the tensor cores would truncate (cuBLAS rounds, so the reference)
        return tl.dot(_round_tf32(a), _round_tf32(b), input_precision="tf32")
    elif MM == 2:
        return tl.dot(a.to(tl.bfloat16), b.to(tl.bfloat16))
    else:  # bf16 operands emulated in fp32: the same rounding, for Triton's interpreter (no bf16 dot)
        return tl.dot(_round_bf16(a), _round_bf16(b), input_precision="ieee")


@triton.jit
def _mm_tn(a, b, MM: tl.constexpr):
    """aᵀ @ b (a weight's gradient, summed over the points of a and b's rows) at matrix precision MM; bf16
    operands are rounded before the transpose (half the bytes through shared memory)."""
    if MM == 2:
        return tl.dot(tl.trans(a.to(tl.bfloat16)), b.to(tl.bfloat16))
    else:
        return _mm(tl.trans(a), b, MM)


PARTS = tl.constexpr(8)
"""Rows of the partial sums of `SUMS` 2: the tensor cores' output layout gives each lane of a one-warp tile the
rows j + 8i (i = 0, 1, …) of one j < 8, so the sums over i stay within the lane."""


@triton.jit
def _sums_zero(OUTP: tl.constexpr, SUMS: tl.constexpr):
    """An accumulator of a bias's gradient over the chunks: (OUTP,) (SUMS 0); (16, OUTP) (SUMS 1), the sums of
    every row of a product of ones (16, BN) with the chunk's gradients; (PARTS, OUTP) (SUMS 2), partial sums."""
    if SUMS == 0:
        return tl.zeros((OUTP,), dtype=tl.float32)
    elif SUMS == 1:
        return tl.zeros((16, OUTP), dtype=tl.float32)
    else:
        return tl.zeros((PARTS, OUTP), dtype=tl.float32)


@triton.jit
def _sums_add(acc, dz, MM: tl.constexpr, SUMS: tl.constexpr):
    """acc + Σ over the rows (points) of dz (BN, OUTP): a reduction across the warp's lanes (SUMS 0); a product
    of ones with dz on the tensor cores at matrix precision MM (SUMS 1), whose operand dz shares its rounding
    and layout with the weight gradient's product (no shuffles); or, for one warp (SUMS 2), the sums of rows
    r ≡ k (mod PARTS), which the tensor cores' output layout keeps in one lane each: adds within the lanes,
    and the reduction across them once, at the end (`_sums_value`), in fp32 like SUMS 0."""
    if SUMS == 0:
        return acc + tl.sum(dz, axis=0)
    elif SUMS == 1:
        return acc + _mm(tl.full((16, dz.shape[0]), 1.0, tl.float32), dz, MM)
    else:
        return acc + tl.sum(tl.reshape(dz, (dz.shape[0] // PARTS, PARTS, dz.shape[1])), axis=0)


@triton.jit
def _sums_value(acc, SUMS: tl.constexpr):
    """The (OUTP,) sums of an accumulator of `_sums_zero` (SUMS 0: the accumulator itself, whatever its length;
    SUMS 1: its rows are equal, the first one exactly)."""
    if SUMS == 0:
        return acc
    elif SUMS == 1:
        r = tl.arange(0, 16)
        return tl.sum(tl.where(r[:, None] == 0, acc, 0.0), axis=0)
    else:
        return tl.sum(acc, axis=0)


@triton.jit
def _column(x, K: tl.constexpr, DP: tl.constexpr):
    """Column K (BN,) of the coordinates x (BN, DP), picked by a masked sum (2-D tensors only, see `_mm_coords`)."""
    return tl.sum(tl.where(tl.arange(0, DP)[None, :] == K, x, 0.0), axis=1)


@triton.jit
def _mm_coords(x, w, DP: tl.constexpr):
    """x (BN, DP) @ w (DP, HP) in fp32, the coordinates' product of the first layer: below a tile's 16
    columns one outer product per coordinate (no padding of 2 coordinates to 16), else an IEEE tile."""
    if DP < 16:  # one outer product per coordinate, each column picked by a masked sum (2-D tensors only:
        # the same as a (BN, DP, HP) broadcast summed over its middle axis, which compiled wrong for sm_90)
        d = tl.arange(0, DP)
        z = tl.zeros((x.shape[0], w.shape[1]), dtype=tl.float32)
        for k in tl.static_range(DP):
            z += _column(x, k, DP)[:, None] * tl.sum(tl.where(d[:, None] == k, w, 0.0), axis=0)[None, :]
        return z
    else:
        return _mm(x, w, 0)


@triton.jit
def _coords_grad(x, dz, DP: tl.constexpr):
    """xᵀ dz (DP, HP) in fp32, the first layer's weight gradient from the coordinates x (BN, DP): as
    `_mm_coords`, below 16 columns one masked sum per coordinate, else an IEEE tile."""
    if DP < 16:
        d = tl.arange(0, DP)
        g = tl.zeros((DP, dz.shape[1]), dtype=tl.float32)
        for k in tl.static_range(DP):
            gk = tl.sum(_column(x, k, DP)[:, None] * dz, axis=0)
            g += tl.where(d[:, None] == k, gk[None, :], 0.0)
        return g
    else:
        return _mm(tl.trans(x), dz, 0)


@triton.jit
def _round_tf32(x):
    """x rounded to the nearest TF32 (10 mantissa bits, ties to even), in fp32. Fed to the tensor cores
    unrounded, fp32 loses its low 13 bits by truncation, a bias toward zero in every product that cost a
    SIREN 3×64 0.4 dB at 64 dB (H100, tests/gpu/check_fused.py) against torch's TF32, which rounds."""
    u = x.to(tl.uint32, bitcast=True)
    u = (u + 0xFFF + ((u >> 13) & 1)) & 0xFFFFE000
    return u.to(tl.float32, bitcast=True)


@triton.jit
def _round_bf16(x):
    """x rounded to the nearest bf16 (ties to even), in fp32. Written out because Triton's interpreter
    truncates in `.to(tl.bfloat16)` where the GPU rounds to nearest."""
    u = x.to(tl.uint32, bitcast=True)
    u = (u + 0x7FFF + ((u >> 16) & 1)) & 0xFFFF0000
    return u.to(tl.float32, bitcast=True)


@triton.jit
def _load_w(ptr, IN: tl.constexpr, OUT: tl.constexpr, INP: tl.constexpr, OUTP: tl.constexpr):
    r = tl.arange(0, INP)
    c = tl.arange(0, OUTP)
    return tl.load(ptr + r[:, None] * OUT + c[None, :], mask=(r[:, None] < IN) & (c[None, :] < OUT), other=0.0)


@triton.jit
def _weight(ptr, IN: tl.constexpr, OUT: tl.constexpr, INP: tl.constexpr, OUTP: tl.constexpr, MM: tl.constexpr):
    """A weight that only enters matrix products: held in bf16 when the products are."""
    w = _load_w(ptr, IN, OUT, INP, OUTP)
    if MM == 2:
        w = w.to(tl.bfloat16)
    return w


@triton.jit
def _encode(x, ENCP, F: tl.constexpr, D: tl.constexpr, FP: tl.constexpr, DP: tl.constexpr, ENC: tl.constexpr):
    """(cos, sin) of the angles (BN, FP) of the Fourier encoding of x (BN, DP), in fp32 (angles of tens of
    radians): x Aᵀ, times 2π for Gaussian features (the reference's order of rounding)."""
    angles = _mm(x, tl.trans(_load_w(ENCP, F, D, FP, DP)), 0)
    if ENC == 1:
        angles = angles * 6.283185307179586
    return tl.cos(angles), tl.sin(angles)


@triton.jit
def _layer0(x, gc, gs, PRM, b0, w, D: tl.constexpr, H: tl.constexpr, F: tl.constexpr, DI: tl.constexpr,
            DP: tl.constexpr, HP: tl.constexpr, FP: tl.constexpr, ENC: tl.constexpr, FIRST: tl.constexpr,
            ACT: tl.constexpr, FOLD: tl.constexpr):
    """The first layer's scaled pre-activation (`_pre`, activation scale w, b0 = `_bias` of its bias),
    weights read from PRM: on x (ENC 0), or on γ = [x (DI > 0), cos gc, sin gs]; fp32 like the reference."""
    if FIRST == 1:  # x has a column of ones at D, and the bias is the weight's row D
        z = _mm(x, _load_w(PRM, D + 1, H, DP, HP), 4)
        if ACT == 2 or FOLD == 0:
            return z
        else:
            return z * w
    if ENC == 0:
        z = _mm_coords(x, _load_w(PRM, D, H, DP, HP), DP)
    else:
        z = _mm(gc, _load_w(PRM + DI * H, F, H, FP, HP), 0) + _mm(gs, _load_w(PRM + (DI + F) * H, F, H, FP, HP), 0)
        if DI > 0:
            z += _mm(x, _load_w(PRM, D, H, DP, HP), 0)
    return _pre(z, b0, w, ACT, FOLD)


@triton.jit
def _first(x, gc, gs, w0, b0, PRM, w, D: tl.constexpr, H: tl.constexpr, F: tl.constexpr, DI: tl.constexpr,
           DP: tl.constexpr, HP: tl.constexpr, FP: tl.constexpr, ENC: tl.constexpr, FIRST: tl.constexpr,
           ACT: tl.constexpr, FOLD: tl.constexpr):
    """The step kernel's first scaled pre-activation, the same values in the forward pass and where the
    backward pass recomputes them: from the weight w0 held (and scaled) through the chunks (FIRST 1, with
    x's column of ones; or ENC 0), else read from PRM (`_layer0`)."""
    if FIRST == 1:
        return _mm(x, w0, 4)
    elif ENC == 0:
        return _mm_coords(x, w0, DP) + b0[None, :]
    else:
        return _layer0(x, gc, gs, PRM, b0, w, D, H, F, DI, DP, HP, FP, ENC, FIRST, ACT, FOLD)


@triton.jit
def _load_b(ptr, OUT: tl.constexpr, OUTP: tl.constexpr):
    c = tl.arange(0, OUTP)
    return tl.load(ptr + c, mask=c < OUT, other=0.0)


@triton.jit
def _apply_w(P, M, V, G, g, IN: tl.constexpr, OUT: tl.constexpr, INP: tl.constexpr, OUTP: tl.constexpr,
             lr, bc1, bc2s, B1: tl.constexpr, B2: tl.constexpr, EPS: tl.constexpr, SPLIT: tl.constexpr):
    """A weight's gradient g (INP, OUTP), padding masked: added into G atomically (SPLIT), or Adam on P."""
    r = tl.arange(0, INP)
    c = tl.arange(0, OUTP)
    offs = r[:, None] * OUT + c[None, :]
    mask = (r[:, None] < IN) & (c[None, :] < OUT)
    if SPLIT:
        tl.atomic_add(G + offs, g, mask=mask)
    else:
        _adam(P + offs, M + offs, V + offs, mask, g, lr, bc1, bc2s, B1, B2, EPS)


@triton.jit
def _apply_b(P, M, V, G, g, OUT: tl.constexpr, OUTP: tl.constexpr, lr, bc1, bc2s, B1: tl.constexpr,
             B2: tl.constexpr, EPS: tl.constexpr, SPLIT: tl.constexpr):
    """A bias's gradient g (OUTP,): as `_apply_w`."""
    c = tl.arange(0, OUTP)
    if SPLIT:
        tl.atomic_add(G + c, g, mask=c < OUT)
    else:
        _adam(P + c, M + c, V + c, c < OUT, g, lr, bc1, bc2s, B1, B2, EPS)


@triton.jit
def _apply_layer(P, M, V, G, g_w, g_b, IN: tl.constexpr, OUT: tl.constexpr, INP: tl.constexpr,
                 OUTP: tl.constexpr, lr, bc1, bc2s, B1: tl.constexpr, B2: tl.constexpr, EPS: tl.constexpr,
                 SPLIT: tl.constexpr):
    """A layer's weight (IN, OUT) and, after it, its bias."""
    _apply_w(P, M, V, G, g_w, IN, OUT, INP, OUTP, lr, bc1, bc2s, B1, B2, EPS, SPLIT)
    _apply_b(P + IN * OUT, M + IN * OUT, V + IN * OUT, G + IN * OUT, g_b, OUT, OUTP, lr, bc1, bc2s, B1, B2, EPS,
             SPLIT)


@triton.jit
def _adam(p_ptr, m_ptr, v_ptr, mask, g, lr, bc1, bc2s, B1: tl.constexpr, B2: tl.constexpr, EPS: tl.constexpr):
    """torch.optim.Adam's update (no weight decay): bc1 = 1 − β1^t, bc2s = √(1 − β2^t)."""
    p = tl.load(p_ptr, mask=mask, other=0.0)
    m = tl.load(m_ptr, mask=mask, other=0.0)
    v = tl.load(v_ptr, mask=mask, other=0.0)
    m = B1 * m + (1.0 - B1) * g
    v = B2 * v + (1.0 - B2) * g * g
    p = p - (lr / bc1) * m / (tl.sqrt(v) / bc2s + EPS)
    tl.store(p_ptr, p, mask=mask)
    tl.store(m_ptr, m, mask=mask)
    tl.store(v_ptr, v, mask=mask)


@triton.jit
def _points(X, T, IDX, trow, pid_f, start, limit, K, N,
            D: tl.constexpr, C: tl.constexpr, DP: tl.constexpr, CP: tl.constexpr, BN: tl.constexpr,
            HAS_IDX: tl.constexpr, HAS_T: tl.constexpr):
    """Coordinates (BN, DP), targets (BN, CP) and the row mask of points start … start+BN of a field."""
    j = start + tl.arange(0, BN)
    valid = j < limit
    if HAS_IDX:
        idx = tl.load(IDX + pid_f.to(tl.int64) * K + j, mask=valid, other=0).to(tl.int64)
    else:
        idx = j.to(tl.int64)
    d = tl.arange(0, DP)
    c = tl.arange(0, CP)
    x = tl.load(X + idx[:, None] * D + d[None, :], mask=valid[:, None] & (d[None, :] < D), other=0.0)
    if HAS_T:
        t = tl.load(T + trow * N * C + idx[:, None] * C + c[None, :], mask=valid[:, None] & (c[None, :] < C),
                    other=0.0)
    else:
        t = tl.zeros((BN, CP), dtype=tl.float32)
    return x, t, valid


@triton.jit
def fused_mlp_step(
    PRM, M, V, G, X, T, IDX, ROWS, CNT, LOSS, HYP, ENCP,
    K, N, loss_scale, enc_stride,
    D: tl.constexpr, H: tl.constexpr, C: tl.constexpr, NH: tl.constexpr,
    DP: tl.constexpr, HP: tl.constexpr, CP: tl.constexpr, BN: tl.constexpr,
    ENC: tl.constexpr, F: tl.constexpr, FP: tl.constexpr, DI: tl.constexpr, IN0: tl.constexpr,
    ACT: tl.constexpr, W_FIRST: tl.constexpr, W_HIDDEN: tl.constexpr, MM: tl.constexpr, FAST: tl.constexpr,
    HAS_IDX: tl.constexpr, HAS_CNT: tl.constexpr, SPLIT: tl.constexpr, CHUNKS: tl.constexpr,
    RELOAD: tl.constexpr, RECOMPUTE: tl.constexpr, SUMS: tl.constexpr, FIRST: tl.constexpr, FOLD: tl.constexpr,
    B1: tl.constexpr, B2: tl.constexpr, EPS: tl.constexpr,
):
    """One Adam step of the loss Σ_fields loss_scale · Σ_points ‖y − t‖² (mean squared error when
    loss_scale = 1 / (K·C)). Program (field, part): PRM/M/V/G rows are fields, ROWS maps a field to its
    target row in T (N points of C values), IDX (fields, K) picks the points of each field, or the
    first K points are used; with HAS_CNT, field i uses only the first CNT[i] ≤ K of its IDX row (fields of
    unequal point counts: the partitions of one field; loss_scale stays the caller's); ENCP + field · enc_stride is a field's encoding matrix A (ENC > 0); a program takes CHUNKS chunks of BN points. LOSS[field] receives Σ‖y − t‖²
    before the update. RELOAD: the hidden and head weights are read (from L1/L2) at each use instead of
    being held in registers for the whole program — for wide fields, whose weights would crowd out the
    registers that let several programs share a multiprocessor. RECOMPUTE 1 (2): the first (two) layers'
    pre-activations are computed again in the backward pass instead of held through the chunk — fewer live
    registers for a little more arithmetic (the first layer's product is a few columns deep). SUMS 1: the
    hidden and head biases' gradients are products of ones with the chunk's gradients on the tensor cores
    instead of sums across the lanes; SUMS 2 (one warp): every bias's gradient, the first's too, a narrow
    2-D first layer's weight gradient and the loss as partial sums within the lanes, reduced across them once
    (`_sums_add`). FIRST 1: the first layer as a TF32×3
    tile (above); only for fields without an encoding (`launch_constants` gives others 0)."""
    pid_f = tl.program_id(0)
    part = tl.program_id(1)
    P: tl.constexpr = IN0 * H + H + (NH - 1) * (H * H + H) + H * C + C
    base = pid_f.to(tl.int64) * P
    trow = tl.load(ROWS + pid_f).to(tl.int64)
    o_w1: tl.constexpr = IN0 * H + H
    o_w2: tl.constexpr = o_w1 + H * H + H
    o_w3: tl.constexpr = o_w2 + H * H + H
    o_wh: tl.constexpr = IN0 * H + H + (NH - 1) * (H * H + H)
    o_c: tl.constexpr = DI * H
    o_s: tl.constexpr = (DI + F) * H
    enc = ENCP + pid_f.to(tl.int64) * enc_stride

    # held through the chunks: the first layer's weight times its activation scale (`_bias` scales like a
    # bias), so that one product gives the scaled pre-activation; every bias scaled once (`_pre`)
    if FIRST == 1:
        w0 = _bias(_load_w(PRM + base, D + 1, H, DP, HP), W_FIRST, ACT, FOLD)  # [w0; b0]
    elif ENC == 0:
        w0 = _bias(_load_w(PRM + base, D, H, DP, HP), W_FIRST, ACT, FOLD)
    else:
        w0 = tl.zeros((DP, HP), dtype=tl.float32)  # unused: `_layer0` reads the weights at each chunk
        g_w0c = tl.zeros((FP, HP), dtype=tl.float32)
        g_w0s = tl.zeros((FP, HP), dtype=tl.float32)
    b0 = _bias(_load_b(PRM + base + IN0 * H, H, HP), W_FIRST, ACT, FOLD)
    bh = _load_b(PRM + base + o_wh + H * C, C, CP)
    g_w0 = tl.zeros((DP, HP), dtype=tl.float32)
    S0: tl.constexpr = SUMS & 2  # fp32 sums (first layer's bias, loss): lanes (0) or partials (2), never ones
    g_b0 = _sums_zero(HP, S0)
    PAIR: tl.constexpr = FIRST == 0 and ENC == 0 and DP == 2 and S0 == 2  # `_coords_grad` as two partial sums
    g_wx = _sums_zero(HP, S0)  # with PAIR, Σ x₀·dz and Σ x₁·dz so far (else unused)
    g_wy = _sums_zero(HP, S0)
    g_wh = tl.zeros((HP, CP), dtype=tl.float32)
    g_bh = _sums_zero(CP, SUMS)
    if not RELOAD:
        wh = _weight(PRM + base + o_wh, H, C, HP, CP, MM)
    if NH >= 2:
        if not RELOAD:
            w1 = _weight(PRM + base + o_w1, H, H, HP, HP, MM)
        b1 = _bias(_load_b(PRM + base + o_w1 + H * H, H, HP), W_HIDDEN, ACT, FOLD)
        g_w1 = tl.zeros((HP, HP), dtype=tl.float32)
        g_b1 = _sums_zero(HP, SUMS)
    if NH >= 3:
        if not RELOAD:
            w2 = _weight(PRM + base + o_w2, H, H, HP, HP, MM)
        b2 = _bias(_load_b(PRM + base + o_w2 + H * H, H, HP), W_HIDDEN, ACT, FOLD)
        g_w2 = tl.zeros((HP, HP), dtype=tl.float32)
        g_b2 = _sums_zero(HP, SUMS)
    if NH >= 4:
        if not RELOAD:
            w3 = _weight(PRM + base + o_w3, H, H, HP, HP, MM)
        b3 = _bias(_load_b(PRM + base + o_w3 + H * H, H, HP), W_HIDDEN, ACT, FOLD)
        g_w3 = tl.zeros((HP, HP), dtype=tl.float32)
        g_b3 = _sums_zero(HP, SUMS)
    if S0 == 2:  # Σ over points of the squared errors so far: per value, partial sums in the lanes
        loss = _sums_zero(CP, S0)
    else:  # per point (a sum over its values: within the warp, never across warps every chunk)
        loss = tl.zeros((BN,), dtype=tl.float32)

    first = part * (CHUNKS * BN)
    limit = K
    if HAS_CNT:
        limit = tl.load(CNT + pid_f)
    for chunk in range(CHUNKS):
        x, t, valid = _points(X, T, IDX, trow, pid_f, first + chunk * BN, limit, K, N, D, C, DP, CP, BN, HAS_IDX,
                              True)
        # forward, keeping each layer's pre-activation z in registers (activations are recomputed from
        # it in the backward pass: fewer live registers, more fields per multiprocessor)
        gc, gs = x, x  # the encoding's cosines and sines, when there is one
        if FIRST == 1:
            x = tl.where(tl.arange(0, DP)[None, :] == D, 1.0, x)
        elif ENC != 0:
            gc, gs = _encode(x, enc, F, D, FP, DP, ENC)
        z0 = _first(x, gc, gs, w0, b0, PRM + base, W_FIRST, D, H, F, DI, DP, HP, FP, ENC, FIRST, ACT, FOLD)
        a = _act(z0, W_FIRST, ACT, FAST, FOLD)
        if NH >= 2:
            if RELOAD:
                w1 = _weight(PRM + base + o_w1, H, H, HP, HP, MM)
            z1 = _pre(_mm(a, w1, MM), b1, W_HIDDEN, ACT, FOLD)
            a = _act(z1, W_HIDDEN, ACT, FAST, FOLD)
        if NH >= 3:
            if RELOAD:
                w2 = _weight(PRM + base + o_w2, H, H, HP, HP, MM)
            z2 = _pre(_mm(a, w2, MM), b2, W_HIDDEN, ACT, FOLD)
            a = _act(z2, W_HIDDEN, ACT, FAST, FOLD)
        if NH >= 4:
            if RELOAD:
                w3 = _weight(PRM + base + o_w3, H, H, HP, HP, MM)
            z3 = _pre(_mm(a, w3, MM), b3, W_HIDDEN, ACT, FOLD)
            a = _act(z3, W_HIDDEN, ACT, FAST, FOLD)
        if RELOAD:
            wh = _weight(PRM + base + o_wh, H, C, HP, CP, MM)
        y = _mm(a, wh, MM) + bh[None, :]
        c = tl.arange(0, CP)
        err = tl.where(valid[:, None] & (c[None, :] < C), y - t, 0.0)
        if S0 == 2:
            loss = _sums_add(loss, err * err, 0, S0)
        else:
            loss += tl.sum(err * err, axis=1)
        # backward: each layer's gradient from the kept activations, accumulated over the chunks
        dy = 2.0 * loss_scale * err
        g_wh += _mm_tn(a, dy, MM)
        g_bh = _sums_add(g_bh, dy, MM, SUMS)
        if RELOAD:
            wh = _weight(PRM + base + o_wh, H, C, HP, CP, MM)
        da = _mm(dy, tl.trans(wh), MM)
        if NH >= 4:
            dz = da * _act_grad(z3, a, W_HIDDEN, ACT, FAST, FOLD)
            a = _act(z2, W_HIDDEN, ACT, FAST, FOLD)
            g_w3 += _mm_tn(a, dz, MM)
            g_b3 = _sums_add(g_b3, dz, MM, SUMS)
            if RELOAD:
                w3 = _weight(PRM + base + o_w3, H, H, HP, HP, MM)
            da = _mm(dz, tl.trans(w3), MM)
        if NH >= 3:
            if RECOMPUTE >= 2:  # z0 and z1 again from x, instead of held since the forward pass
                z0 = _first(x, gc, gs, w0, b0, PRM + base, W_FIRST, D, H, F, DI, DP, HP, FP, ENC, FIRST, ACT, FOLD)
                if RELOAD:
                    w1 = _weight(PRM + base + o_w1, H, H, HP, HP, MM)
                z1 = _pre(_mm(_act(z0, W_FIRST, ACT, FAST, FOLD), w1, MM), b1, W_HIDDEN, ACT, FOLD)
            dz = da * _act_grad(z2, a, W_HIDDEN, ACT, FAST, FOLD)
            a = _act(z1, W_HIDDEN, ACT, FAST, FOLD)
            g_w2 += _mm_tn(a, dz, MM)
            g_b2 = _sums_add(g_b2, dz, MM, SUMS)
            if RELOAD:
                w2 = _weight(PRM + base + o_w2, H, H, HP, HP, MM)
            da = _mm(dz, tl.trans(w2), MM)
        if RECOMPUTE == 1 or (RECOMPUTE >= 2 and NH < 3):  # z0 again from x
            z0 = _first(x, gc, gs, w0, b0, PRM + base, W_FIRST, D, H, F, DI, DP, HP, FP, ENC, FIRST, ACT, FOLD)
        if NH >= 2:
            dz = da * _act_grad(z1, a, W_HIDDEN, ACT, FAST, FOLD)
            a = _act(z0, W_FIRST, ACT, FAST, FOLD)
            g_w1 += _mm_tn(a, dz, MM)
            g_b1 = _sums_add(g_b1, dz, MM, SUMS)
            if RELOAD:
                w1 = _weight(PRM + base + o_w1, H, H, HP, HP, MM)
            da = _mm(dz, tl.trans(w1), MM)
        dz = da * _act_grad(z0, a, W_FIRST, ACT, FAST, FOLD)
        if FIRST == 1:
            g_w0 += _mm(tl.trans(x), dz, 4)  # and the bias's gradient, row D
        elif DI > 0:
            if PAIR:
                g_wx = _sums_add(g_wx, _column(x, 0, DP)[:, None] * dz, 0, S0)
                g_wy = _sums_add(g_wy, _column(x, 1, DP)[:, None] * dz, 0, S0)
            else:
                g_w0 += _coords_grad(x, dz, DP)
        if ENC != 0:
            g_w0c += _mm(tl.trans(gc), dz, 0)
            g_w0s += _mm(tl.trans(gs), dz, 0)
        if FIRST == 0:
            g_b0 = _sums_add(g_b0, dz, 0, S0)

    # The field's gradients: added into G (SPLIT: other programs hold the rest of its points), or Adam now.
    if SPLIT:
        tl.atomic_add(LOSS + pid_f, tl.sum(_sums_value(loss, S0), axis=0))
    else:
        tl.store(LOSS + pid_f, tl.sum(_sums_value(loss, S0), axis=0))
    lr = tl.load(HYP)  # with SPLIT, HYP is any tensor and these go unused
    bc1 = tl.load(HYP + 1)
    bc2s = tl.load(HYP + 2)
    P0, M0, V0, G0 = PRM + base, M + base, V + base, G + base
    if FIRST == 1:
        _apply_w(P0, M0, V0, G0, g_w0, D + 1, H, DP, HP, lr, bc1, bc2s, B1, B2, EPS, SPLIT)
    elif DI > 0:
        if PAIR:
            g_w0 = tl.where(tl.arange(0, DP)[:, None] == 0, _sums_value(g_wx, S0)[None, :],
                            _sums_value(g_wy, S0)[None, :])
        _apply_w(P0, M0, V0, G0, g_w0, D, H, DP, HP, lr, bc1, bc2s, B1, B2, EPS, SPLIT)
    if ENC != 0:
        _apply_w(P0 + o_c, M0 + o_c, V0 + o_c, G0 + o_c, g_w0c, F, H, FP, HP, lr, bc1, bc2s, B1, B2, EPS, SPLIT)
        _apply_w(P0 + o_s, M0 + o_s, V0 + o_s, G0 + o_s, g_w0s, F, H, FP, HP, lr, bc1, bc2s, B1, B2, EPS, SPLIT)
    ob: tl.constexpr = IN0 * H
    if FIRST == 0:
        _apply_b(P0 + ob, M0 + ob, V0 + ob, G0 + ob, _sums_value(g_b0, S0), H, HP, lr, bc1, bc2s, B1, B2, EPS, SPLIT)
    if NH >= 2:
        _apply_layer(P0 + o_w1, M0 + o_w1, V0 + o_w1, G0 + o_w1, g_w1, _sums_value(g_b1, SUMS), H, H, HP, HP,
                     lr, bc1, bc2s, B1, B2, EPS, SPLIT)
    if NH >= 3:
        _apply_layer(P0 + o_w2, M0 + o_w2, V0 + o_w2, G0 + o_w2, g_w2, _sums_value(g_b2, SUMS), H, H, HP, HP,
                     lr, bc1, bc2s, B1, B2, EPS, SPLIT)
    if NH >= 4:
        _apply_layer(P0 + o_w3, M0 + o_w3, V0 + o_w3, G0 + o_w3, g_w3, _sums_value(g_b3, SUMS), H, H, HP, HP,
                     lr, bc1, bc2s, B1, B2, EPS, SPLIT)
    _apply_layer(P0 + o_wh, M0 + o_wh, V0 + o_wh, G0 + o_wh, g_wh, _sums_value(g_bh, SUMS), H, C, HP, CP,
                 lr, bc1, bc2s, B1, B2, EPS, SPLIT)


@triton.jit
def fused_mlp_forward(
    PRM, X, IDX, Y, ENCP, K, enc_stride,
    D: tl.constexpr, H: tl.constexpr, C: tl.constexpr, NH: tl.constexpr,
    DP: tl.constexpr, HP: tl.constexpr, CP: tl.constexpr, BN: tl.constexpr,
    ENC: tl.constexpr, F: tl.constexpr, FP: tl.constexpr, DI: tl.constexpr, IN0: tl.constexpr,
    ACT: tl.constexpr, W_FIRST: tl.constexpr, W_HIDDEN: tl.constexpr, MM: tl.constexpr, FAST: tl.constexpr,
    HAS_IDX: tl.constexpr, X_PER_FIELD: tl.constexpr,
):
    """Values Y (fields, K, C) of every field at K points: X (K, D) shared, or (fields, K, D) when
    X_PER_FIELD, or X[IDX[field]]. Program (field, block of BN points)."""
    pid_f = tl.program_id(0)
    start = tl.program_id(1) * BN
    P: tl.constexpr = IN0 * H + H + (NH - 1) * (H * H + H) + H * C + C
    base = pid_f.to(tl.int64) * P
    o_w1: tl.constexpr = IN0 * H + H
    o_w2: tl.constexpr = o_w1 + H * H + H
    o_w3: tl.constexpr = o_w2 + H * H + H
    o_wh: tl.constexpr = IN0 * H + H + (NH - 1) * (H * H + H)
    x_base = X
    if X_PER_FIELD:
        x_base = X + pid_f.to(tl.int64) * K * D
    x, t, valid = _points(x_base, X, IDX, 0, pid_f, start, K, K, 0, D, C, DP, CP, BN, HAS_IDX, False)
    gc, gs = x, x  # the encoding's cosines and sines, when there is one
    if ENC != 0:
        gc, gs = _encode(x, ENCP + pid_f.to(tl.int64) * enc_stride, F, D, FP, DP, ENC)
    # z kept as it is (FOLD 0), as timed before the step kernel's FOLD
    a = _act(_layer0(x, gc, gs, PRM + base, _load_b(PRM + base + IN0 * H, H, HP), W_FIRST, D, H, F, DI, DP, HP, FP, ENC,
                     0, ACT, 0), W_FIRST, ACT, FAST, 0)
    if NH >= 2:
        a = _act(_mm(a, _load_w(PRM + base + o_w1, H, H, HP, HP), MM)
                 + _load_b(PRM + base + o_w1 + H * H, H, HP)[None, :], W_HIDDEN, ACT, FAST, 0)
    if NH >= 3:
        a = _act(_mm(a, _load_w(PRM + base + o_w2, H, H, HP, HP), MM)
                 + _load_b(PRM + base + o_w2 + H * H, H, HP)[None, :], W_HIDDEN, ACT, FAST, 0)
    if NH >= 4:
        a = _act(_mm(a, _load_w(PRM + base + o_w3, H, H, HP, HP), MM)
                 + _load_b(PRM + base + o_w3 + H * H, H, HP)[None, :], W_HIDDEN, ACT, FAST, 0)
    y = _mm(a, _load_w(PRM + base + o_wh, H, C, HP, CP), MM) + _load_b(PRM + base + o_wh + H * C, C, CP)[None, :]
    j = start + tl.arange(0, BN)
    c = tl.arange(0, CP)
    tl.store(Y + pid_f.to(tl.int64) * K * C + j[:, None] * C + c[None, :], y, mask=valid[:, None] & (c[None, :] < C))


@triton.jit
def fused_adam(PRM, M, V, G, HYP, numel, B1: tl.constexpr, B2: tl.constexpr, EPS: tl.constexpr,
               BLOCK: tl.constexpr):
    """Adam on flat parameters PRM with gradients G (the split step's second pass), HYP = [lr, 1 − β1^t,
    √(1 − β2^t)]: one launch instead of a chain of elementwise torch operations."""
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < numel
    g = tl.load(G + offs, mask=mask, other=0.0)
    _adam(PRM + offs, M + offs, V + offs, mask, g, tl.load(HYP), tl.load(HYP + 1), tl.load(HYP + 2), B1, B2, EPS)


# ---- Multiresolution hash encoding (`kernels.hashgrid`): one launch for its forward pass, one for its table's
# gradient, instead of the reference path's (points, levels, corners, dims) int64 intermediates.


@triton.jit
def _hash_axis(x, res, BIT: tl.constexpr):
    """A point's vertex along one axis of a level (int64) and its multilinear factor: frac (the corner's bit 1)
    or 1 − frac (0), as `HashGridEncoding.forward` computes them (a point at 1 lands in the last cell)."""
    pos = x * res
    base = tl.minimum(tl.floor(pos), res - 1.0)
    frac = pos - base
    if BIT == 1:
        return base.to(tl.int64) + 1, frac
    return base.to(tl.int64), 1.0 - frac


@triton.jit
def _hash_more(dense, h, w, stride, x, res, r1, prime, BIT: tl.constexpr):
    """Corner (dense index, hash, weight) so far, extended by one more axis at `stride` = (r+1)^axis."""
    v, f = _hash_axis(x, res, BIT)
    return dense + v * stride, h ^ (v * prime), w * f, stride * r1


@triton.jit
def _hash_corner(x0, x1, x2, x3, p0, p1, p2, p3, res, r1, size, hashed, off, K: tl.constexpr, D: tl.constexpr):
    """The table row and the weight of corner K (bit i: axis i's upper vertex) of a level's cell: the dense
    index Σ vᵢ (r+1)^i, or, on a hashed level, XORᵢ vᵢ·pᵢ mod the level's size; plus the level's offset."""
    v, w = _hash_axis(x0, res, K & 1)
    dense, h, stride = v, v * p0, r1
    if D > 1:
        dense, h, w, stride = _hash_more(dense, h, w, stride, x1, res, r1, p1, (K >> 1) & 1)
    if D > 2:
        dense, h, w, stride = _hash_more(dense, h, w, stride, x2, res, r1, p2, (K >> 2) & 1)
    if D > 3:
        dense, h, w, stride = _hash_more(dense, h, w, stride, x3, res, r1, p3, (K >> 3) & 1)
    return tl.where(hashed, h % size, dense) + off, w


@triton.jit
def _hash_unit(X, rows, valid, I: tl.constexpr, D: tl.constexpr):
    """Coordinate I of the block's points, mapped from [−1, 1] to [0, 1] and clamped as the reference path
    does (I ≥ D: another axis again, which the corners of a D-dimensional cell never read)."""
    return tl.minimum(tl.maximum((tl.load(X + rows * D + I % D, mask=valid, other=0.0) + 1.0) * 0.5, 0.0), 1.0)


@triton.jit
def _hash_prime(PRIMES, I: tl.constexpr, D: tl.constexpr):
    """Axis I's hashing prime (int64), loaded once per program (I ≥ D: another axis's, never read)."""
    return tl.load(PRIMES + I % D)


@triton.jit
def hash_encode(X, SRC, DST, RES, SIZES, OFFS, HASHED, PRIMES, n, L: tl.constexpr, D: tl.constexpr,
                F: tl.constexpr, FP: tl.constexpr, BLOCK: tl.constexpr, BACKWARD: tl.constexpr):
    """The encoding of points X (n, D) in [−1, 1]: for each point and level, the multilinear interpolation of
    its cell's 2^D corners' features, rows of a table (rows, F). Forward: SRC the table, DST (n, L·F) the
    features. BACKWARD: SRC (n, L·F) the features' gradient, DST (rows, F) the table's gradient, to which
    each corner's row adds weight × gradient atomically (points share rows). Per level l: RES[l] cells per
    axis (fp32), SIZES[l] table rows, OFFS[l] its first row, HASHED[l] whether it is hashed. Program: BLOCK
    points."""
    rows = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    valid = rows < n
    f = tl.arange(0, FP)
    fmask = valid[:, None] & (f[None, :] < F)
    features = rows[:, None] * (L * F) + f[None, :]  # a point's row of the (n, L·F) features, level 0
    x0, x1, x2, x3 = (_hash_unit(X, rows, valid, 0, D), _hash_unit(X, rows, valid, 1, D),
                      _hash_unit(X, rows, valid, 2, D), _hash_unit(X, rows, valid, 3, D))
    p0, p1, p2, p3 = (_hash_prime(PRIMES, 0, D), _hash_prime(PRIMES, 1, D), _hash_prime(PRIMES, 2, D),
                      _hash_prime(PRIMES, 3, D))
    for level in range(L):
        res = tl.load(RES + level)
        r1 = res.to(tl.int64) + 1
        size = tl.load(SIZES + level)
        off = tl.load(OFFS + level)
        hashed = tl.load(HASHED + level) != 0
        if BACKWARD:
            g = tl.load(SRC + features + level * F, mask=fmask, other=0.0)
        else:
            acc = tl.zeros((BLOCK, FP), dtype=tl.float32)
        for k in tl.static_range(2 ** D):
            index, w = _hash_corner(x0, x1, x2, x3, p0, p1, p2, p3, res, r1, size, hashed, off, k, D)
            table = index[:, None] * F + f[None, :]
            if BACKWARD:
                tl.atomic_add(DST + table, w[:, None] * g, mask=fmask, sem="relaxed")
            else:
                acc += w[:, None] * tl.load(SRC + table, mask=fmask, other=0.0)
        if not BACKWARD:
            tl.store(DST + features + level * F, acc, mask=fmask)
