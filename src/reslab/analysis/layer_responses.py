"""Layer responses (He et al. 2015, section 4.2, Fig. 7): residual functions respond less than plain layers.

For each block we read the branch output F(x) at ``block.branch_out`` (after the branch's last BN, before
the addition) and record its standard deviation over a batch. The paper finds the residual nets' responses
generally smaller than the plain nets', "which supports our basic motivation (Sec. 3.1) that the residual
functions might be generally closer to zero than the non-residual functions". We also record how close each
block is to the identity: the relative norm ``||F(x)|| / ||x||`` (0 for an exact identity block).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from reslab.evidence import ONE_SEED, RULE, mean_std, separate

if TYPE_CHECKING:
    from reslab.models.nets import StagedNet


@dataclass
class ResponseProfile:
    """Per-block responses of one model, in depth order."""

    label: str
    model_name: str
    residual: bool
    trained: bool
    stds: list[float]  # std of F(x) per channel over batch and positions, averaged over channels
    rel_norms: list[float]  # mean over samples of ||F(x)|| / ||shortcut input x||

    @property
    def mean_std(self) -> float:
        return sum(self.stds) / len(self.stds) if self.stds else float("nan")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "mean_std": self.mean_std}


def _sample_norm(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(t.shape[0], -1).norm(dim=1)  # (B,)


@torch.inference_mode()
def block_responses(
    model: StagedNet, x: torch.Tensor, *, batch_size: int = 256, batch_stats: bool = False
) -> tuple[list[float], list[float]]:
    """``(stds, rel_norms)`` per block of ``model`` on ``x`` (B, ...).

    BN uses its running statistics (eval mode), as a trained net is used; ``batch_stats=True`` uses each
    chunk's own statistics instead, which is what a fresh net's BN does (its running statistics are still
    the defaults 0 and 1). Running statistics are left untouched either way. The std is accumulated over
    chunks of ``batch_size`` as sums of moments.
    """
    blocks = list(model.blocks())
    n_blocks = len(blocks)
    # Per block: running sum, sum of squares (per channel), count; and the sum of per-sample norm ratios.
    # The std is per channel over batch and positions, then averaged over channels: a per-tensor std would
    # also count differences between channels' means (BN betas), which are not responses to the input.
    s1: list[torch.Tensor | None] = [None] * n_blocks
    s2: list[torch.Tensor | None] = [None] * n_blocks
    counts = [0] * n_blocks
    ratio_sum = [0.0] * n_blocks
    inputs: dict[int, torch.Tensor] = {}
    handles = []
    for i, block in enumerate(blocks):

        def pre(_m: nn.Module, args: tuple[torch.Tensor, ...], i: int = i) -> None:
            inputs[i] = args[0]

        def post(_m: nn.Module, _a: Any, out: torch.Tensor, i: int = i) -> None:
            c = out.shape[1]
            flat = out.double().transpose(0, 1).reshape(c, -1)  # (C, B*H*W)
            prev1, prev2 = s1[i], s2[i]
            s1[i] = flat.sum(1) if prev1 is None else prev1 + flat.sum(1)
            s2[i] = flat.square().sum(1) if prev2 is None else prev2 + flat.square().sum(1)
            counts[i] += flat.shape[1]
            ratio = _sample_norm(out) / _sample_norm(inputs[i]).clamp_min(1e-12)
            ratio_sum[i] += float(ratio.double().sum())

        handles.append(block.register_forward_pre_hook(pre))
        tap = block.get_submodule("branch_out")  # every reslab block's F(x), an nn.Identity
        handles.append(tap.register_forward_hook(post))
    was_training = model.training
    buffers = [b.clone() for b in model.buffers()]
    model.train(batch_stats)
    try:
        for start in range(0, x.shape[0], batch_size):
            model(x[start : start + batch_size])
    finally:
        model.train(was_training)
        for b, saved in zip(model.buffers(), buffers):
            b.copy_(saved)  # batch_stats mode moved BN's running statistics: put them back
        for h in handles:
            h.remove()
    n = x.shape[0]
    stds = []
    for i in range(n_blocks):
        m1, m2 = s1[i], s2[i]
        assert m1 is not None and m2 is not None, "every block's branch_out must run"
        k = counts[i]
        var = (m2 - m1.square() / k) / max(k - 1, 1)  # unbiased, per channel
        stds.append(float(var.clamp_min(0).sqrt().mean()))
    return stds, [r / n for r in ratio_sum]


def response_profile(
    model: StagedNet,
    x: torch.Tensor,
    *,
    label: str,
    model_name: str,
    residual: bool,
    trained: bool,
    batch_size: int = 256,
) -> ResponseProfile:
    # A fresh net's BN has default running statistics: read it the way it would run, on batch statistics.
    stds, rel = block_responses(model, x, batch_size=batch_size, batch_stats=not trained)
    return ResponseProfile(label, model_name, residual, trained, stds, rel)


def response_verdict(profiles: list[ResponseProfile]) -> tuple[bool | None, str]:
    """Whether "residual functions respond less than plain layers" holds: each model's mean response std is
    one sample, residual against plain, under reslab's one rule (:func:`reslab.evidence.separate`: every
    residual model below every plain one and the gap above 2 standard errors). Models of several seeds (runs
    of ``reslab compare --seeds 2``, say) test it; one model per kind states the numbers only.

    Returns ``(holds, sentence)``; ``holds`` is None when the claim was not tested (one model of a kind) or
    when the two kinds overlap, and when the models given lack a plain or a residual net.
    """
    res = [p.mean_std for p in profiles if p.residual]
    plain = [p.mean_std for p in profiles if not p.residual]
    if not res or not plain:
        return None, "give at least one plain and one residual model to compare their responses"
    r, q = sum(res) / len(res), sum(plain) / len(plain)
    # The paper's Fig. 7 is about trained nets; at init the responses only reflect the initialisation.
    when = (
        ""
        if any(p.trained for p in profiles)
        else " at initialisation (the paper's claim is for trained nets)"
    )
    numbers = f"mean response std residual {_spread(res)} vs plain {_spread(plain)}, ratio {r / q:.2f}"
    side = separate(res, plain)
    if side == "one seed":
        return None, f"layer responses{when}: {numbers} ({ONE_SEED}; pass runs of several seeds per kind)"
    if side == "overlap":
        return None, f"layer responses{when}: no clear difference between residual and plain ({numbers})"
    holds = side == "below"
    claim = "respond less than" if holds else "respond more than"
    models = f"{len(res)} residual and {len(plain)} plain models; {RULE}"
    return holds, f"residual functions {claim} plain layers{when} ({numbers}; {models})"


def _spread(values: list[float]) -> str:
    mean, std = mean_std(values)
    return f"{mean:.3g}" + (f" ± {std:.2g}" if len(values) > 1 else "")


def response_table(profiles: list[ResponseProfile]) -> str:
    """One row per model: blocks, mean / min / max std, mean and max ||F(x)||/||x||."""
    rows = [
        (
            "model",
            "kind",
            "weights",
            "blocks",
            "mean std",
            "min std",
            "max std",
            "mean |F|/|x|",
            "max |F|/|x|",
        )
    ]
    for p in profiles:
        rows.append(
            (
                p.label,
                "residual" if p.residual else "plain",
                "trained" if p.trained else "init",
                str(len(p.stds)),
                f"{p.mean_std:.3g}",
                f"{min(p.stds):.3g}",
                f"{max(p.stds):.3g}",
                f"{sum(p.rel_norms) / len(p.rel_norms):.3g}",
                f"{max(p.rel_norms):.3g}",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
