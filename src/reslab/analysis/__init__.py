"""Why residual networks train: gradient flow, layer responses, loss landscapes and the identity argument.

This package reads models and runs; nothing in models, data or engine imports it back.

- :mod:`~reslab.analysis.studies`: the three studies as functions, ``gradients``, ``responses`` and
  ``landscape``, each a config -> a result with its table, files and figure;
- :mod:`~reslab.analysis.gradient_flow`: ||dL/dW|| and ||dL/d(block output)|| per layer, at init and after
  K steps;
- :mod:`~reslab.analysis.layer_responses`: std of each block's branch output (He et al. 2015, Fig. 7);
- :mod:`~reslab.analysis.loss_surface`: filter-normalised random-direction loss surfaces (Li et al. 2018);
- :mod:`~reslab.analysis.identity`: a residual block with a zeroed branch is exactly the identity.
"""

from __future__ import annotations

from reslab.analysis.gradient_flow import (
    GradientProfile,
    GradientSnapshot,
    gradient_profile,
    gradient_snapshot,
)
from reslab.analysis.identity import branch_relative_norm, is_identity_block, zero_branch
from reslab.analysis.layer_responses import (
    ResponseProfile,
    block_responses,
    response_profile,
    response_verdict,
)
from reslab.analysis.loss_surface import Landscape, filter_normalized_direction, loss_landscape
from reslab.analysis.studies import (
    GradientsConfig,
    GradientsResult,
    LandscapeConfig,
    LandscapeResult,
    ResponsesConfig,
    ResponsesResult,
    StudyResult,
    gradients,
    landscape,
    responses,
)
from reslab.analysis.subjects import Subject, fixed_batch, load_subjects

__all__ = [
    "GradientProfile",
    "GradientSnapshot",
    "GradientsConfig",
    "GradientsResult",
    "Landscape",
    "LandscapeConfig",
    "LandscapeResult",
    "ResponseProfile",
    "ResponsesConfig",
    "ResponsesResult",
    "StudyResult",
    "Subject",
    "block_responses",
    "branch_relative_norm",
    "filter_normalized_direction",
    "fixed_batch",
    "gradient_profile",
    "gradient_snapshot",
    "gradients",
    "is_identity_block",
    "landscape",
    "load_subjects",
    "loss_landscape",
    "response_profile",
    "response_verdict",
    "responses",
    "zero_branch",
]
