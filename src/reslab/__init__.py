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

``ModelSpec`` describes a variant for ``register_model``. No name here is also a module: the subpackages
are ``models``, ``data``, ``engine`` (training),
``experiments``, ``analysis`` and ``cli``.
"""

from __future__ import annotations

from reslab.analysis import GradientsConfig as GradientsConfig
from reslab.analysis import LandscapeConfig as LandscapeConfig
from reslab.analysis import ResponsesConfig as ResponsesConfig
from reslab.analysis import gradients as gradients
from reslab.analysis import landscape as landscape
from reslab.analysis import responses as responses
from reslab.engine import EvalReport as EvalReport
from reslab.engine import RunResult as RunResult
from reslab.engine import TrainConfig as TrainConfig
from reslab.engine import evaluate as evaluate
from reslab.engine import export_run as export_run
from reslab.engine import load_run as load_run
from reslab.engine import predict as predict
from reslab.engine import train as train
from reslab.errors import ReslabError as ReslabError
from reslab.experiments import AblateConfig as AblateConfig
from reslab.experiments import AblateResult as AblateResult
from reslab.experiments import CompareConfig as CompareConfig
from reslab.experiments import CompareResult as CompareResult
from reslab.experiments import ablate as ablate
from reslab.experiments import compare as compare
from reslab.models import ModelSpec as ModelSpec
from reslab.models import build_model as build_model
from reslab.models import inspect_weights as inspect_weights
from reslab.models import list_models as list_models
from reslab.models import load_weights as load_weights
from reslab.models import register_model as register_model
from reslab.plots import plot_runs as plot_runs
from reslab.version import __version__ as __version__

# Every class and function imported above (the `X as X` form marks it public for type checkers).
__all__ = [
    "__version__",
    *sorted(n for n, v in dict(globals()).items() if str(getattr(v, "__module__", "")).startswith("reslab.")),
]
