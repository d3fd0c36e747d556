"""reslab: build, train and study residual networks next to their plain twins (He et al., 2015).

The public API::

    import reslab
    model = reslab.build_model("resnet20", num_classes=10)      # or "plain20", its plain twin
    reslab.list_models()
    result = reslab.train(reslab.TrainConfig(model="resnet20", dataset="mnist5k"))
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "ReslabError",
    "RunResult",
    "TrainConfig",
    "__version__",
    "build_model",
    "list_models",
    "register_model",
    "train",
]

from reslab.errors import ReslabError
from reslab.models import build_model, list_models, register_model

if TYPE_CHECKING:
    from reslab.train import RunResult, TrainConfig, train


def __getattr__(name: str) -> Any:
    # The training engine is imported lazily so that `import reslab` stays light for model users.
    if name in ("train", "TrainConfig", "RunResult"):
        import reslab.train as _train

        return getattr(_train, name)
    raise AttributeError(f"module 'reslab' has no attribute {name!r}")
