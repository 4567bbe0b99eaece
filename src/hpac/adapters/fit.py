"""SARP-FT: per-image low-rank adapters, paid for in the file (minimum description length;
HPAC, Li, Bai et al. 2025, after the rate-guided progressive fine-tuning of CALLIC, AAAI 2025).

Encoder (``fit``)::

    patches --frozen full pass--> bits per patch --best-first growth on the patch grid-->
        nested, spatially contiguous regions R_1 c R_2 c ... c all patches
    for t in 0..T-1: Adam step on the adapters, loss = bits of patches sampled from R(t)
    quantise with the step that minimises (estimated image bits + adapter bits)
    -> merged network -> full pass: keep the adapters only if they pay for themselves

The adapters, their integers and the merge are :mod:`hpac.adapters.lora`. Only ``B`` is
trained, so half the parameters of a plain LoRA travel for the same rank; a measured plain
LoRA gained no more per step.

Everything that changes the result runs single-threaded on fixed chunks of patches whose
gradients are summed in a fixed order: the bytes do not depend on the thread count.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch.optim.adam import adam  # the function form: no torch._dynamo import (see _Adam)

from ..nn.mixture import nll_bits, normalise, zero_flagged_bits
from ..nn.architecture import ModelConfig
from ..nn.model import HPACNet
from ..nn.quantize import float_state
from ..parallel import Workers
from .effort import Effort
from .lora import MAX_Q, QSTEPS, adapted_weights, encode_ints, merge, projection

# pixels of a gradient chunk, whole patches (fixed: results never depend on the worker count).
# One P = 128 patch: a step of two patches keeps two workers busy (at two patches a chunk,
# most steps of effort 2 ran on one core)
CHUNK_PIXELS = 128 * 128
PROBE_PIXELS = 6 * 128 * 128  # pixels of the densest patches the quantisation step is chosen on
# side of the tiles a plane is fitted on, whatever P codes it: regions grow tile by tile, so a
# plane coded in a few big patches still has a grid to grow them on
FIT_PATCH = 128
# least pixels a step trains on: two tiles keep both workers of a 2-core machine busy, so small
# planes take twice the gradient at almost no wall time (held-out head CT: -0.7% at effort 2)
MIN_STEP_PIXELS = 2 * FIT_PATCH * FIT_PATCH
REGION_START, REGION_HOLD = 0.2, 0.1  # F(t) starts at 20% of the patches; the last 10% of steps see all


class _LoRAFALinear(torch.autograd.Function):
    """y = x @ (W + B A)^T + bias with gradients for x and B only (W, A and bias are frozen).

    The low-rank term is folded into the (out, in) weight before the one GEMM, so no (N, out)
    tensor of ``x A^T B^T`` is ever built and added; its gradient B' = g^T (x A^T) stays two
    thin products. A fitting step runs 15% faster than as ``lin(x) + (x A^T) B^T`` (gradients
    equal to 5e-6 relative; docs/sarp-ft.md, session 18)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, a: torch.Tensor,
                b: torch.Tensor) -> torch.Tensor:
        w = torch.addmm(weight, b, a)
        x2 = x.reshape(-1, x.shape[-1])  # (N, in)
        ctx.save_for_backward(x2, w, a)
        return torch.addmm(bias, x2, w.t()).reshape(*x.shape[:-1], w.shape[0])

    @staticmethod
    def backward(ctx, gy: torch.Tensor):
        x2, w, a = ctx.saved_tensors
        g = gy.reshape(-1, gy.shape[-1])  # (N, out)
        gx = (g @ w).reshape(*gy.shape[:-1], w.shape[1]) if ctx.needs_input_grad[0] else None
        return gx, None, None, None, g.t() @ (x2 @ a.t())


class _LoRAFA(torch.nn.Module):
    """Training view of one adapted Linear: y = x @ (W + B A)^T + bias, B float (out, rank)."""

    def __init__(self, lin: torch.nn.Linear, a: np.ndarray, b: torch.Tensor):
        super().__init__()
        self.lin = lin
        self.register_buffer("a", torch.from_numpy((a / math.sqrt(a.shape[1])).astype(np.float32)))
        self.b = b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _LoRAFALinear.apply(x, self.lin.weight, self.lin.bias, self.a, self.b)


# ----------------------------------------------------------------------------- regions
def grow_order(patch_bits: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """Patch indices in the order a region grows: start at the densest patch, then always add
    the highest-bits patch adjacent (4-neighbourhood) to the region; every prefix is contiguous."""
    import heapq

    n = rows * cols
    start = int(np.argmax(patch_bits))
    seen = np.zeros(n, dtype=bool)
    heap = [(-float(patch_bits[start]), start)]
    seen[start] = True
    order = []
    while heap:
        _, i = heapq.heappop(heap)
        order.append(i)
        r, c = divmod(i, cols)
        for rr, cc in ((r - 1, c), (r + 1, c), (r, c - 1), (r, c + 1)):
            j = rr * cols + cc
            if 0 <= rr < rows and 0 <= cc < cols and not seen[j]:
                seen[j] = True
                heapq.heappush(heap, (-float(patch_bits[j]), j))
    return np.asarray(order, dtype=np.int64)


def region_fraction(step: int, steps: int) -> float:
    """F(t) = b + (1 - b) smoothstep(t / (T (1 - d))): the share of patches trained on at step t."""
    x = min(1.0, step / max(1e-9, steps * (1 - REGION_HOLD)))
    return REGION_START + (1 - REGION_START) * x * x * (3 - 2 * x)


# ----------------------------------------------------------------------------- fitting
@dataclass
class Fit:
    """Outcome of :func:`fit` (bits are full-pass estimates of the plane, padding excluded;
    ``effort0_floor`` is capped per subpixel: close to, and below, its effort-0 cost)."""

    rank: int
    qstep: float
    ints: list[np.ndarray]
    blob: bytes
    bits_before: float
    effort0_floor: float
    bits_after: float  # image bits under the merged, quantised adapters (estimated on a probe)

    @property
    def total_after(self) -> float:
        return self.bits_after + 8 * len(self.blob)

    def merged(self, state: dict[str, np.ndarray], cfg: ModelConfig) -> dict[str, np.ndarray]:
        """The float weights ``state`` with these adapters merged (:func:`hpac.adapters.lora.merge`)."""
        return merge(state, cfg, self.rank, self.qstep, self.ints)


def fit_tile(cfg: ModelConfig, height: int, width: int) -> int:
    """Side of the square tiles a ``height`` x ``width`` plane is fitted on: FIT_PATCH, or
    P where P is smaller, or, where the plane and the network's reach beyond its right and
    bottom edges fit in one tile, that size (rounded up to 8).

    A 64 x 64 icon then trains on 80 x 80 tiles instead of 128 x 128 ones (2.6x fewer
    pixels). The reach is kept because the coding patch pads the plane with zeros whose
    features the network computes; a tile cut at the plane's edge would train its edge
    pixels on other context than they are coded with (3-4% bigger files on two of ten small
    synthetic images, which can gain 40% from their adapters, so they are fitted, not
    skipped)."""
    reach = (cfg.blocks + 1) * (cfg.kernel // 2)  # columns right (and more than the rows below) a pixel's features read
    return min(cfg.patch, FIT_PATCH, -(-(max(height, width) + reach) // 8) * 8)


def _per(patch: int, pixels: int) -> int:
    """Whole P x P patches in about ``pixels`` pixels (at least one)."""
    return max(1, pixels // (patch * patch))


def _chunks(idx: np.ndarray, patch: int) -> list[np.ndarray]:
    per = _per(patch, CHUNK_PIXELS)
    return [idx[i : i + per] for i in range(0, len(idx), per)]


def _patch_bits(net: torch.nn.Module, sym: torch.Tensor, valid: torch.Tensor, bits: int,
                capped: bool = False, zero_flags: bool = False) -> torch.Tensor:
    """(B,) bits of each patch; sym (B, P, P, c) int64, valid (B, P, P) bool.

    ``zero_flags``: the plane's zeros are flagged (hpac.entropy.zeroflags): they cost nothing here
    and every other value is coded conditioned on not being 0.

    ``capped`` adds a column, (B, 2): the bits with each subpixel counted at most ``bits``.
    The coder pays little more than the model's code length where it predicts well and at
    least ``bits`` where a value escapes the focus window (hpac.entropy.afc), so the capped sum is
    close to, and below, what coding costs."""
    cfg = net.cfg
    x = normalise(sym, bits).permute(0, 3, 1, 2) * valid[:, None]
    if zero_flags:
        per = zero_flagged_bits(net(x), sym, bits, cfg.mixtures)
    else:
        per = nll_bits(net(x), sym, bits, cfg.channels, cfg.mixtures)
    if capped:
        per = torch.stack([per, per.clamp(max=float(bits))], -1)
        return (per.sum(-2) * valid[..., None]).flatten(1, 2).sum(1)
    return (per.sum(-1) * valid).flatten(1).sum(1)


@dataclass
class _FitState:
    """What the fit's workers share: the frozen net, its adapted copy (``work``, whose B are
    ``params``), the plane, and the quantised adapters last merged (cached per process)."""

    net: HPACNet
    work: HPACNet
    params: list[torch.Tensor]
    sym: torch.Tensor
    valid: torch.Tensor
    bits: int
    rank: int
    zero_flags: bool = False
    coding: tuple[torch.Tensor, torch.Tensor] | None = None  # the coding patches where P is not the tile
    merged: tuple[int, HPACNet] | None = None

    @property
    def patch(self) -> int:
        return self.sym.shape[1]


def _chunk_bits(st: _FitState, task: tuple[object, np.ndarray]) -> torch.Tensor:
    """(len(ix),) bits under the frozen net (key None) or under merged adapters (key, q, ints)."""
    key, ix = task
    net = st.net
    if key is not None:
        if st.merged is None or st.merged[0] != key[0]:
            cfg = st.net.cfg
            st.merged = (key[0], HPACNet.from_state(cfg, merge(float_state(st.net), cfg, st.rank, key[1], key[2])))
        net = st.merged[1]
    with torch.no_grad():
        return _patch_bits(net, st.sym[ix], st.valid[ix], st.bits, capped=key is None, zero_flags=st.zero_flags)


def _coding_floor(st: _FitState, ix: np.ndarray) -> torch.Tensor:
    """(len(ix),) capped bits of the coding patches ``ix`` under the frozen net."""
    sym, valid = st.coding
    with torch.no_grad():
        return _patch_bits(st.net, sym[ix], valid[ix], st.bits, capped=True, zero_flags=st.zero_flags)[:, 1]


def _chunk_grad(st: _FitState, task: tuple[list[torch.Tensor], np.ndarray, float]) -> list[torch.Tensor]:
    """Gradients of (bits of the chunk / count) with respect to every B, at the given B values."""
    values, ix, count = task
    with torch.no_grad():
        for p, v in zip(st.params, values):
            p.copy_(v)
    # the loss keeps the zeros' bits even where they are flagged: 0.4-0.7% smaller files over
    # three seeds on three head CT slices than leaving them out (docs/sarp-ft.md, session 11)
    loss = _patch_bits(st.work, st.sym[ix], st.valid[ix], st.bits).sum() / count
    return list(torch.autograd.grad(loss, st.params))


def _bits(pool: Workers, which: np.ndarray, key: object = None) -> np.ndarray:
    return torch.cat(pool.map(_chunk_bits, [(key, ix) for ix in _chunks(which, pool.state.patch)])).double().numpy()


class _Adam:
    """``torch.optim.Adam(params, lr)`` with default betas and eps: the same arithmetic (the
    functional ``torch.optim.adam.adam`` that ``Adam.step`` calls, with the same arguments).

    Not the optimizer class because constructing any ``torch.optim.Optimizer`` imports
    ``torch._dynamo``: 1.7 s of every effort >= 1 encode in a fresh process, more than the
    whole fit of a small image."""

    def __init__(self, params: list[torch.Tensor], lr: float):
        self.params, self.lr = params, lr
        self.exp_avgs = [torch.zeros_like(p, memory_format=torch.preserve_format) for p in params]
        self.exp_avg_sqs = [torch.zeros_like(p, memory_format=torch.preserve_format) for p in params]
        self.steps = [torch.tensor(0.0, dtype=torch.get_default_dtype()) for _ in params]

    @torch.no_grad()
    def step(self) -> None:
        adam(self.params, [p.grad for p in self.params], self.exp_avgs, self.exp_avg_sqs, [], self.steps,
             foreach=None, capturable=False, differentiable=False, fused=None, grad_scale=None, found_inf=None,
             has_complex=False, decoupled_weight_decay=False, amsgrad=False, beta1=0.9, beta2=0.999,
             lr=self.lr, weight_decay=0.0, eps=1e-8, maximize=False)


def fit(net: HPACNet, sym: torch.Tensor, valid: torch.Tensor, bits: int, grid: tuple[int, int],
        effort: Effort, seed: int = 0, workers: int = 1, progress: bool = False,
        zero_flags: bool = False, coding: tuple[torch.Tensor, torch.Tensor] | None = None) -> Fit | None:
    """Fine-tune adapters for one plane; None where adapting does not pay (estimated).

    Args:
        sym: (N, T, T, c) int64 tiles of the plane (T = :func:`fit_tile`);
            valid: (N, T, T) bool.
        grid: (rows, cols) of the tile grid (N = rows * cols).
        zero_flags: the plane's zeros are flagged, so they are left out of the estimates.
        coding: the plane's (M, P, P, c) int64 coding patches and their validity, where P is
            not T: the effort-0 floor is measured on them, since bigger patches cost less.
    """
    n = sym.shape[0]
    work = copy.deepcopy(net)
    for p in work.parameters():
        p.requires_grad_(False)
    params = []
    for j, name in enumerate(adapted_weights(work.cfg)):  # "blocks.i.layer.weight", in file order
        path, attr, _ = name.rsplit(".", 2)
        owner = work.get_submodule(path)
        lin = getattr(owner, attr)
        b = torch.zeros(lin.out_features, effort.rank, requires_grad=True)
        setattr(owner, attr, _LoRAFA(lin, projection(j, effort.rank, lin.in_features), b))
        params.append(b)
    work.train()
    state = _FitState(net, work, params, sym, valid, bits, effort.rank, zero_flags, coding)
    with Workers(state, workers) as pool:
        fitted = _fit(pool, params, n, grid, effort, seed, progress)
        if fitted is not None and coding is not None:
            floors = pool.map(_coding_floor, _chunks(np.arange(coding[0].shape[0]), coding[0].shape[1]))
            fitted.effort0_floor = float(torch.cat(floors).double().sum())
    return fitted


def _fit(pool: Workers, params: list[torch.Tensor], n: int, grid: tuple[int, int], effort: Effort,
         seed: int, progress: bool) -> Fit | None:
    """:func:`fit` once the workers share the plane and the adapted net."""
    st = pool.state
    before, floor = _bits(pool, np.arange(n)).T
    order = grow_order(before, *grid)
    optim = _Adam(params, effort.lr)
    per_step = min(n, max(_per(st.patch, MIN_STEP_PIXELS), math.ceil(effort.epochs * n / effort.steps)))
    gen = torch.Generator().manual_seed(seed)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=effort.steps, desc="adapt", unit="step", leave=False, dynamic_ncols=True)
    for step in range(effort.steps):
        region = order[: max(1, round(region_fraction(step, effort.steps) * n))]
        pick = np.sort(region[torch.randperm(len(region), generator=gen)[:per_step].numpy()])
        count = float(st.valid[pick].sum())
        values = [p.detach().clone() for p in params]
        grads = pool.map(_chunk_grad, [(values, ix, count) for ix in _chunks(pick, st.patch)])
        for j, p in enumerate(params):
            p.grad = sum(gr[j] for gr in grads)  # fixed chunk order: same sum for any worker count
        optim.step()
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    # the quantisation step: the best estimated total on a probe of the densest patches (the
    # encoder codes the plane with and without the adapters anyway, so no full check pass)
    probe = order[: min(n, _per(st.patch, PROBE_PIXELS))]
    scale = before.sum() / max(1e-9, before[probe].sum())
    best = None
    for qi, q in enumerate(QSTEPS):
        ints = [(p.detach().double() / q).round().clamp(-MAX_Q, MAX_Q).to(torch.int64).numpy() for p in params]
        if not any(b.any() for b in ints):
            continue
        blob = encode_ints(effort.rank, qi, ints)
        est = _bits(pool, probe, (qi, q, ints)).sum() * scale
        if best is None or est + 8 * len(blob) < best[0]:
            best = (est + 8 * len(blob), q, ints, blob)
    if best is None or best[0] >= before.sum():
        return None
    total, q, ints, blob = best
    return Fit(effort.rank, q, ints, blob, float(before.sum()), float(floor.sum()), float(total - 8 * len(blob)))
