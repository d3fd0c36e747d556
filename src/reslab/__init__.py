"""reslab: build, train and study residual networks next to their plain twins (He et al., 2015).

The public API, plain functions that take a typed config (or its settings as keyword arguments) and return
result objects that also display in Jupyter::

    import reslab
    model = reslab.build_model("resnet20", num_classes=10)           # or "plain20", its plain twin
    run = reslab.train(reslab.TrainConfig(model="resnet20", epochs=2))
    reslab.evaluate(run.run_dir)                                      # loss, error, top-5 error
    sweep = reslab.compare(depths=(20, 32), epochs=2)                 # the degradation experiment
    reslab.ablate(variants=("identity", "scaling"))                   # He et al. 2016's shortcut ablations
    reslab.gradients(entries=("plainmlp64", "resmlp64"))              # why: gradient flow per layer
    reslab.responses()                                                # layer responses (Fig. 7), default pair
    reslab.landscape(entries=("runs/a", "runs/b"))                    # loss landscapes
    reslab.load_weights(model, "resnet18.pth")                        # torchvision/timm/akamaster/reslab
    reslab.plot_runs(["runs/a", "runs/b"])                            # training curves of runs

No name here is also a module: the subpackages are ``models``, ``data``, ``engine`` (training),
``experiments``, ``analysis`` and ``cli``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from reslab.errors import ReslabError
from reslab.models import build_model, list_models, register_model
from reslab.version import __version__

if TYPE_CHECKING:
    from reslab.analysis import (
        GradientsConfig,
        LandscapeConfig,
        ResponsesConfig,
        gradients,
        landscape,
        responses,
    )
    from reslab.engine import (
        EvalReport,
        RunResult,
        TrainConfig,
        evaluate,
        export_run,
        load_run,
        predict,
        train,
    )
    from reslab.experiments import AblateConfig, AblateResult, CompareConfig, CompareResult, ablate, compare
    from reslab.models import inspect_weights, load_weights
    from reslab.plots import plot_runs

# The engine, experiments and analysis are imported on first use, so that `import reslab` stays light for
# model users; each name maps to the module that defines it.
_LAZY = {
    **dict.fromkeys(
        ("train", "TrainConfig", "RunResult", "evaluate", "EvalReport", "predict", "export_run", "load_run"),
        "reslab.engine",
    ),
    **dict.fromkeys(
        ("compare", "CompareConfig", "CompareResult", "ablate", "AblateConfig", "AblateResult"),
        "reslab.experiments",
    ),
    **dict.fromkeys(("load_weights", "inspect_weights"), "reslab.models"),
    "plot_runs": "reslab.plots",
    **dict.fromkeys(
        ("gradients", "GradientsConfig", "responses", "ResponsesConfig", "landscape", "LandscapeConfig"),
        "reslab.analysis",
    ),
}

__all__ = [
    "AblateConfig",
    "AblateResult",
    "CompareConfig",
    "CompareResult",
    "EvalReport",
    "GradientsConfig",
    "LandscapeConfig",
    "ReslabError",
    "ResponsesConfig",
    "RunResult",
    "TrainConfig",
    "__version__",
    "ablate",
    "build_model",
    "compare",
    "evaluate",
    "export_run",
    "gradients",
    "inspect_weights",
    "landscape",
    "list_models",
    "load_run",
    "load_weights",
    "plot_runs",
    "predict",
    "register_model",
    "responses",
    "train",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value  # later lookups skip this function
        return value
    raise AttributeError(f"module 'reslab' has no attribute {name!r}")
