"""Activation-aware weight scaling (AWQ-style) before weight-only low-bit quantization, in torch.

A Linear's error at low bits matters in proportion to the inputs it multiplies: a weight column that meets
large activations costs more output error when rounded than one that meets small ones. AWQ (Lin et al.,
2023) multiplies such columns by s > 1 before quantization and divides the inputs by s, folded into the op
that feeds them (an RMSNorm's weight, or the rows of a preceding Linear), so the float model computes exactly
what it did while its important weights get finer steps of the grid. Per group of Linears that share an input
(q/k/v after the attention norm, gate/up after the MLP norm, o after v, down after up), s = mean|x|^alpha
(or AutoAWQ's mean|x|^alpha / mean|w|^(1-alpha)) with alpha searched on calibration activations for the least
output error of the quantized Linears; then
each block of each weight may be clipped to a smaller range when that lowers the output error too (as AWQ's
auto-clip; q and k are not clipped: their error reaches the attention scores, which the output error here
does not see).

The search quantizes on the grid the final quantizer uses (`simquant.block_grid`): symmetric blocks are
exactly ONNX Runtime's MatMulNBits / llama.cpp Q4_0 rounding, asymmetric ones llama.cpp Q4_1's. The result is
a plain float model: any later quantizer (`quantize` int4, `gguf`, `genai`) quantizes the rescaled weights.
Activations are read once on the float model, as each group's Gram matrix x^T x: the output error of any
change E to a weight is then sum((E @ x^T x) * E), whatever the number of tokens. Rescaling keeps every group's
input except its own, which the search divides by s itself.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from orchestrator.artifacts.simquant import block_grid, blocks


@dataclass
class ScaleGroup:
    """Linears that read one input, and the op that produces it (a norm with an elementwise weight, or a
    Linear whose output rows are that input). `repeat` > 1: the producer's outputs are grouped-query heads of
    `head_dim` channels, each read by `repeat` consecutive heads of the Linears' input (v_proj -> o_proj)."""

    name: str
    prev: nn.Module
    linears: list[tuple[str, nn.Linear]]
    repeat: int = 1
    head_dim: int = 0
    no_clip: tuple[str, ...] = field(default_factory=tuple)


def _expand(s: torch.Tensor, g: ScaleGroup) -> torch.Tensor:
    """A scale over the producer's outputs -> over the Linears' inputs."""
    if g.repeat == 1:
        return s
    return s.view(-1, 1, g.head_dim).expand(-1, g.repeat, g.head_dim).reshape(-1)


def _pool(x: torch.Tensor, g: ScaleGroup) -> torch.Tensor:
    """A statistic over the Linears' inputs -> over the producer's outputs (mean over the repeated heads)."""
    if g.repeat == 1:
        return x
    return x.view(-1, g.repeat, g.head_dim).mean(1).reshape(-1)


@dataclass
class Stats:
    """What the search needs of a group's inputs x (tokens x in): the Gram matrix x^T x (float64), sum |x| per
    channel, and the token count. The output error of any weight change E (out x in) on those tokens is
    sum((E @ gram) * E), so the search never keeps the tokens themselves."""

    gram: torch.Tensor
    abs_sum: torch.Tensor
    count: int = 0


def capture(model: nn.Module, groups: list[ScaleGroup], batches: Iterable[Any],
            forward: Callable[[nn.Module, Any], Any], tokens: int) -> dict[str, Stats]:
    """Input statistics of every group's Linears over the first `tokens` tokens of `batches`."""
    stats: dict[str, Stats] = {}

    def hook(name: str) -> Callable[..., None]:
        def keep(_module: nn.Module, args: tuple) -> None:
            st = stats.get(name)
            if st is not None and st.count >= tokens:
                return
            x = args[0].detach().reshape(-1, args[0].shape[-1])[:tokens - (st.count if st else 0)].double()
            if st is None:
                st = stats[name] = Stats(torch.zeros(x.shape[1], x.shape[1], dtype=torch.float64),
                                         torch.zeros(x.shape[1], dtype=torch.float64))
            st.gram += x.T @ x
            st.abs_sum += x.abs().sum(0)
            st.count += x.shape[0]
        return keep

    handles = [g.linears[0][1].register_forward_pre_hook(hook(g.name)) for g in groups]
    try:
        with torch.no_grad():
            for inputs in batches:
                forward(model, inputs)
                if len(stats) == len(groups) and min(st.count for st in stats.values()) >= tokens:
                    break
    finally:
        for h in handles:
            h.remove()
    return stats


def _error(gram: torch.Tensor, weights: list[torch.Tensor], s: torch.Tensor, bits: int, block: int,
           symmetric: bool) -> float:
    """Summed squared output error of the Linears quantized after scaling their input columns by `s` (and their
    inputs by 1 / s): each row's error e = Q(w * s) / s - w costs e^T gram e."""
    total = 0.0
    for w in weights:
        e = block_grid(w * s, bits, block, symmetric) / s - w
        total += float(((e @ gram) * e).sum())
    return total


def _weight_mean(weights: list[torch.Tensor], g: ScaleGroup, block: int) -> torch.Tensor:
    """Per input channel, the mean over rows of |w| relative to its block's largest |w| (AutoAWQ's w_mean)."""
    means = []
    for w in weights:
        a = blocks(w.abs(), block)
        means.append((a / a.amax(-1, keepdim=True).clamp(min=1e-12)).flatten(1)[:, :w.shape[1]].mean(0))
    return _pool(torch.stack(means).mean(0), g)


def search_scale(st: Stats, g: ScaleGroup, bits: int, block: int, symmetric: bool,
                 steps: int) -> tuple[torch.Tensor, float, float, float]:
    """The best scale (over the producer's outputs) for group `g` with input statistics `st`:
    (s, alpha, error, RTN error).

    Candidates: s = mean|x|^alpha (AWQ's paper) and s = mean|x|^alpha / w_mean^(1 - alpha) (AutoAWQ's default,
    which also lowers the columns whose weights are already large in their blocks), alpha = i / steps.
    """
    gram = st.gram.float()
    weights = [lin.weight.detach().float() for _, lin in g.linears]
    x_mean = _pool((st.abs_sum / max(st.count, 1)).float(), g)
    w_mean = _weight_mean(weights, g, block)
    ones = torch.ones_like(x_mean)
    rtn = _error(gram, weights, _expand(ones, g), bits, block, symmetric)
    best = (ones, 0.0, rtn)
    for i in range(steps):
        alpha = i / steps
        for s in (x_mean.pow(alpha), x_mean.pow(alpha) / (w_mean.pow(1 - alpha) + 1e-4)):
            if i == 0 and torch.equal(s, ones):  # alpha 0 of the first form: plain rounding, done
                continue
            s = s.clamp(min=1e-4)
            s = s / (s.max() * s.min()).sqrt()
            err = _error(gram, weights, _expand(s, g), bits, block, symmetric)
            if err < best[2]:
                best = (s, alpha, err)
    return best[0], best[1], best[2], rtn


def search_clip(gram: torch.Tensor, w: torch.Tensor, bits: int, block: int, symmetric: bool, steps: int,
                max_shrink: float = 0.5) -> tuple[torch.Tensor, float]:
    """`w` with each (row, block) clipped to the range (a fraction 1 .. 1 - max_shrink of its own) whose
    rounding costs the least output error on the inputs whose Gram matrix is `gram` (the block's own part of it:
    each block's output is judged alone, as AWQ's auto-clip does); and the share of blocks clipped."""
    out_f, in_f = w.shape
    if in_f % block:
        return w, 0.0
    n = in_f // block
    g_blocks = torch.stack([gram[b * block:(b + 1) * block, b * block:(b + 1) * block] for b in range(n)])
    wb = w.view(out_f, n, block)
    absmax = wb.abs().amax(-1, keepdim=True)
    best_err = torch.full((out_f, n), float("inf"))
    best = wb.clone()
    for i in range(int(max_shrink * steps)):
        lim = absmax * (1 - i / steps)
        cand = torch.clamp(wb, -lim, lim)
        d = block_grid(cand.reshape(out_f, in_f), bits, block, symmetric).view_as(wb) - wb
        err = torch.einsum("rbk,bkl,rbl->rb", d, g_blocks, d)
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        best = torch.where(better.unsqueeze(-1), cand, best)
    clipped = int((best != wb).any(-1).sum())
    return best.reshape(out_f, in_f), clipped / (out_f * n)


def _scale_prev(prev: nn.Module, s: torch.Tensor) -> None:
    """Divide the producer's outputs by `s`: a norm's weight (and bias), or a Linear's rows (and bias)."""
    if isinstance(prev, nn.Linear):
        prev.weight.div_(s.view(-1, 1).to(prev.weight.dtype))
    else:
        prev.weight.div_(s.to(prev.weight.dtype))
    if getattr(prev, "bias", None) is not None:
        prev.bias.div_(s.to(prev.bias.dtype))


def apply(model: nn.Module, groups: list[ScaleGroup], batches: Iterable[Any],
          forward: Callable[[nn.Module, Any], Any], *, bits: int = 4, block: int = 32, symmetric: bool = True,
          steps: int = 20, clip: bool = True, tokens: int = 2048,
          log: Callable[[str], None] = print) -> dict[str, float]:
    """Rescale (and clip) `model`'s groups in place for `bits`-bit block quantization; returns metrics.

    `awq_error_ratio`: the groups' summed quantized output error on the calibration tokens after / before
    (plain RTN = 1); `awq_alpha_mean`: the mean exponent chosen; `awq_clipped_frac`: blocks clipped.
    """
    start = time.perf_counter()
    stats = capture(model, groups, batches, forward, tokens)
    total_rtn = total_best = 0.0
    alphas, clipped, blocks = [], 0.0, 0
    with torch.no_grad():
        for g in groups:
            st = stats.get(g.name)
            if st is None or st.count == 0:
                raise ValueError(f"group {g.name}: no calibration activations reached it")
            s, alpha, err, rtn = search_scale(st, g, bits, block, symmetric, steps)
            alphas.append(alpha)
            sf = _expand(s, g)
            _scale_prev(g.prev, s)
            for _, lin in g.linears:
                lin.weight.mul_(sf.view(1, -1).to(lin.weight.dtype))
            after = err
            if clip:
                gram = (st.gram.float() / sf.view(-1, 1)) / sf.view(1, -1)  # the rescaled inputs' x / s
                after = 0.0
                for name, lin in g.linears:
                    w = lin.weight.detach().float()
                    q = w
                    if name not in g.no_clip:
                        q, frac = search_clip(gram, w, bits, block, symmetric, steps)
                        lin.weight.copy_(q.to(lin.weight.dtype))
                        n = w.numel() // block
                        clipped, blocks = clipped + frac * n, blocks + n
                    e = block_grid(q, bits, block, symmetric) - w  # against the float (unclipped) weight
                    after += float(((e @ gram) * e).sum())
            total_rtn, total_best = total_rtn + rtn, total_best + after
            log(f"awq: {g.name}: alpha {alpha:.2f}, output error x{after / max(rtn, 1e-30):.3f} of RTN")
    return {"awq_groups": float(len(groups)), "awq_alpha_mean": sum(alphas) / max(len(alphas), 1),
            "awq_error_ratio": total_best / max(total_rtn, 1e-30),
            "awq_clipped_frac": clipped / max(blocks, 1),
            "awq_tokens": float(min(st.count for st in stats.values())),
            "awq_seconds": time.perf_counter() - start}
