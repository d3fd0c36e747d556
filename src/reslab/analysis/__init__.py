"""Why residual networks train: gradient flow, layer responses, loss landscapes and the identity argument.

This package reads models and runs; nothing in models, data or train imports it back.

- :mod:`~reslab.analysis.gradients`: ||dL/dW|| and ||dL/d(block output)|| per layer, at init and after K
  steps;
- :mod:`~reslab.analysis.responses`: std of each block's branch output (He et al. 2015, Fig. 7);
- :mod:`~reslab.analysis.landscape`: filter-normalised random-direction loss surfaces (Li et al. 2018);
- :mod:`~reslab.analysis.identity`: a residual block with a zeroed branch is exactly the identity.
"""

from __future__ import annotations

from reslab.analysis.gradients import (
    GradientProfile,
    GradientSnapshot,
    gradient_profile,
    gradient_snapshot,
    verdict,
    weight_layers,
)
from reslab.analysis.identity import branch_relative_norm, is_identity_block, zero_branch
from reslab.analysis.landscape import Landscape, filter_normalized_direction, loss_landscape
from reslab.analysis.responses import ResponseProfile, block_responses, response_profile, response_verdict
from reslab.analysis.subjects import Subject, fixed_batch, load_subjects

__all__ = [
    "GradientProfile",
    "GradientSnapshot",
    "Landscape",
    "ResponseProfile",
    "Subject",
    "block_responses",
    "branch_relative_norm",
    "filter_normalized_direction",
    "fixed_batch",
    "gradient_profile",
    "gradient_snapshot",
    "is_identity_block",
    "load_subjects",
    "loss_landscape",
    "response_profile",
    "response_verdict",
    "verdict",
    "weight_layers",
    "zero_branch",
]
