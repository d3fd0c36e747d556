"""The one rule of every verdict (``reslab.evidence``) and the analysis verdicts built on it, on hand-made
numbers: one seed never makes a claim, overlapping seeds are "no clear difference", separated seeds are."""

from __future__ import annotations

import pytest

from reslab.analysis.gradient_flow import GradientProfile, GradientSnapshot, gradient_verdict
from reslab.analysis.layer_responses import ResponseProfile, response_verdict
from reslab.evidence import ONE_SEED, mean_std, separate


@pytest.mark.parametrize(
    ("a", "b", "side"),
    [
        ([0.030, 0.034, 0.029], [0.010, 0.012, 0.011], "above"),  # no overlap, gap 19 sd
        ([0.010, 0.012, 0.011], [0.030, 0.034, 0.029], "below"),
        ([0.013, 0.009, 0.012], [0.010, 0.012, 0.011], "overlap"),  # the seeds interleave
        ([0.051, 0.052, 0.053], [0.010, 0.050, 0.030], "overlap"),  # apart, but gap 2.2 < 2 SE 2.3
        ([0.9, 0.9], [0.01, 0.02], "above"),  # no spread on one side: the other's decides
        ([0.5, 0.5], [0.5, 0.5], "overlap"),
        ([0.9], [0.01, 0.02], "one seed"),  # a single seed on either side is never tested
        ([0.9, 0.8], [0.01], "one seed"),
    ],
)
def test_separate(a: list[float], b: list[float], side: str) -> None:
    assert separate(a, b) == side


def test_mean_std() -> None:
    assert mean_std([1.0]) == (1.0, 0.0)
    m, s = mean_std([1.0, 3.0])
    assert m == 2.0 and s == pytest.approx(2**0.5)


def responses(kind: str, *means: float) -> list[ResponseProfile]:
    residual = kind == "residual"
    return [
        ResponseProfile(f"{kind}{i}", "m", residual, True, [m, m], [0.5, 0.5]) for i, m in enumerate(means)
    ]


def test_responses_verdict_claims_only_beyond_the_seed_spread() -> None:
    holds, line = response_verdict(responses("plain", 0.97) + responses("residual", 0.91))
    assert holds is None and ONE_SEED in line and "respond less" not in line
    assert "residual 0.91 vs plain 0.97" in line  # the numbers are still stated
    holds, line = response_verdict(responses("plain", 0.97, 0.92) + responses("residual", 0.91, 0.95))
    assert holds is None and "no clear difference" in line and "respond" not in line
    holds, line = response_verdict(responses("plain", 0.97, 0.99) + responses("residual", 0.81, 0.80))
    assert holds is True and line.startswith("residual functions respond less than plain layers")
    holds, line = response_verdict(responses("plain", 0.5, 0.52) + responses("residual", 0.81, 0.80))
    assert holds is False and "respond more" in line
    assert response_verdict(responses("plain", 0.5))[0] is None  # no residual net to compare with


def grads(kind: str, *ratios: float) -> list[GradientProfile]:
    out = []
    for i, r in enumerate(ratios):
        snap = GradientSnapshot(0, 2.3, ["a", "b"], [r, 1.0], [1.0])
        out.append(GradientProfile(f"{kind}{i}", "m", kind == "residual", False, [snap]))
    return out


def test_gradients_verdict_claims_only_beyond_the_seed_spread() -> None:
    line = gradient_verdict(grads("plain", 1e-50) + grads("residual", 0.77))
    assert ONE_SEED in line and "closer" not in line and "residual 0.114 vs plain 50" in line
    line = gradient_verdict(grads("plain", 1e-50, 1e-45, 1e-48) + grads("residual", 0.77, 0.8, 0.6))
    assert "the residual nets' is closer to 1" in line
    line = gradient_verdict(grads("plain", 0.0, 0.0) + grads("residual", 0.77, 0.8))
    assert "the residual nets' is closer to 1" in line and "plain 324" in line  # underflowed: 324 decades
    line = gradient_verdict(grads("plain", 0.1, 10.0) + grads("residual", 0.2, 0.05))
    assert "no clear difference" in line and "closer" not in line
    assert gradient_verdict(grads("plain", 0.1)) == ""  # nothing to compare
