"""The published figures of He et al. 2016, "Identity Mappings in Deep Residual Networks", Tables 1 and 2.

CIFAR-10 test error (%) of ResNet-110 with each shortcut function (Table 1) and each order of BN and ReLU
(Table 2), the median of 5 runs; "fail" is the paper's word for a test error above 20%. Read from the
paper's text (arXiv:1603.05027v3, sections 3.1 and 4.1). They are shown beside a user's own numbers for
reference; reslab has not reproduced them.
"""

from __future__ import annotations

from typing import Any

SOURCE = 'He, Zhang, Ren, Sun 2016, "Identity Mappings in Deep Residual Networks"'

# (the unit's options, the test error as the paper prints it, where). Options not named take the defaults
# of ShortcutVariant (λ = 0.5, F scaled by 1-λ, b_g = -6, dropout 0.5) and placement "original".
TABLE: tuple[tuple[dict[str, Any], str, str], ...] = (
    ({}, "6.61", "Table 1 (original), Table 2 (a)"),
    ({"shortcut_kind": "scaling"}, "12.35", "Table 1 (constant scaling 0.5/0.5, 'frozen gating')"),
    ({"shortcut_kind": "scaling", "scale_branch": False}, "fail", "Table 1 (constant scaling 0.5/1)"),
    ({"shortcut_kind": "scaling", "shortcut_scale": 0.0}, "fail", "Table 1 (scaling 0/1: a plain net)"),
    *(
        ({"shortcut_kind": "exclusive_gate", "gate_bias": float(-b)}, "fail", "Table 1 (b_g = 0 to -5)")
        for b in range(6)
    ),
    ({"shortcut_kind": "exclusive_gate"}, "8.70", "Table 1 (exclusive gating, b_g = -6)"),
    ({"shortcut_kind": "exclusive_gate", "gate_bias": -7.0}, "9.81", "Table 1 (exclusive gating, b_g = -7)"),
    ({"shortcut_kind": "shortcut_gate", "gate_bias": 0.0}, "12.86", "Table 1 (shortcut-only gate, b_g = 0)"),
    ({"shortcut_kind": "shortcut_gate"}, "6.91", "Table 1 (shortcut-only gate, b_g = -6)"),
    ({"shortcut_kind": "conv1x1"}, "12.22", "Table 1 (1x1 conv shortcut)"),
    ({"shortcut_kind": "dropout"}, "fail", "Table 1 (dropout shortcut 0.5)"),
    ({"placement": "bn_after_add"}, "8.17", "Table 2 (b)"),
    ({"placement": "relu_before_add"}, "7.84", "Table 2 (c)"),
    ({"placement": "relu_preact"}, "6.71", "Table 2 (d)"),
    ({"placement": "full_preact"}, "6.37", "Table 2 (e)"),
)
# The options that define a unit of the tables, with their defaults; the rest (width, shortcut padding, ...)
# is the user's business and does not change which row of the paper a variant is.
_DEFAULTS: dict[str, Any] = {
    "shortcut_kind": "identity",
    "shortcut_scale": 0.5,
    "scale_branch": True,
    "gate_bias": -6.0,
    "shortcut_dropout": 0.5,
    "placement": "original",
}
# Sub-options of one shortcut kind only: the others ignore them.
_OWN = {
    "shortcut_scale": "scaling",
    "scale_branch": "scaling",
    "gate_bias": ("exclusive_gate", "shortcut_gate"),
    "shortcut_dropout": "dropout",
}


def _unit(options: dict[str, Any]) -> dict[str, Any]:
    """The table-defining options of a build_model option dict, defaults filled, irrelevant ones dropped."""
    unit = {k: options.get(k, d) if options.get(k) is not None else d for k, d in _DEFAULTS.items()}
    for key, kinds in _OWN.items():
        if unit["shortcut_kind"] not in (kinds if isinstance(kinds, tuple) else (kinds,)):
            unit[key] = _DEFAULTS[key]
    unit["shortcut_scale"] = float(unit["shortcut_scale"])
    unit["gate_bias"] = float(unit["gate_bias"])
    if unit["shortcut_kind"] == "scaling" and unit["shortcut_scale"] == 0.0:
        unit["scale_branch"] = True  # 1-λ = 1: both forms are the plain net
    return unit


def paper_error(options: dict[str, Any]) -> tuple[str, str] | None:
    """(test error in % or "fail", "Table N (...)") for the unit ``options`` describes, or None."""
    unit = _unit(options)
    for row, error, where in TABLE:
        if _unit(row) == unit:
            return error, where
    return None


def paper_note() -> str:
    """The line under every table that shows these figures."""
    return (
        f"paper: {SOURCE}, Tables 1 and 2: CIFAR-10 test error of ResNet-110 with the paper's recipe, median "
        "of 5 runs; 'fail' = above 20%. Published figures, for reference: reslab has not reproduced them."
    )
