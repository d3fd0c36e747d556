"""What the analyses look at: a trained run directory or a fresh model by name, plus a fixed batch of data.

Every command of :mod:`reslab.analysis` takes entries that are either a run directory made by
``reslab train`` (trained weights, its own normalisation) or a registry name (a fresh model, normalised with
the dataset's channel statistics), optionally with its own build options (``resnet56:shortcut_kind=scaling``).
:func:`load_subjects` turns them into :class:`Subject` s on one dataset.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from reslab.data import ArrayDataset, load_dataset
from reslab.data.loader import Normalization
from reslab.data.passed import PassedData, is_passed
from reslab.errors import ConfigError
from reslab.models.nets import StagedNet


@dataclass
class Subject:
    """One network to analyse, with what is needed to feed it data."""

    label: str  # short name for legends and tables: the model name, or the run directory's name
    model_name: str  # registry name, e.g. "plain56"
    model: StagedNet
    residual: bool
    depth: int
    family: str
    trained: bool  # False: a fresh model at initialisation
    norm: Normalization  # applied to uint8 images before the model
    source: str  # the run directory, or "fresh (at initialisation)"
    model_kwargs: dict[str, Any] = field(default_factory=dict)  # build_model options it was built with
    entry: str = ""  # as given: a run directory, or NAME[:KEY=VALUE...]
    seed_offset: int = 0  # a fresh model drawn again at seed + seed_offset (``gradients --seeds``)


def is_run(entry: str) -> bool:
    """A run directory (or weights file) rather than a registry name."""
    return Path(entry).expanduser().exists() or "/" in entry or entry.endswith((".safetensors", ".json"))


def first_run(entries: list[str]) -> tuple[str, dict[str, Any]] | None:
    """(entry, settings) of the first run directory among ``entries``: what its data was (dataset, data_dir,
    image_size, split_seed, val_split), from its config.json; None when there is none."""
    from reslab.engine.store.rundir import CONFIG
    from reslab.engine.store.runs import read_run_config

    for entry in entries:
        path = Path(entry).expanduser()
        if path.is_dir():
            return entry, read_run_config(path / CONFIG)["config"]
    return None


def load_subjects(
    entries: list[str],
    ds: ArrayDataset,
    *,
    seed: int = 0,
    model_kwargs: dict[str, Any] | None = None,
) -> list[Subject]:
    """Load run directories and build fresh models (seeded, shaped for ``ds``), in the order given.

    ``model_kwargs`` go to :func:`~reslab.models.build_model` for the entries given by name (a run keeps
    the options it was trained with).

    Raises:
        ConfigError: an empty list, an unknown model name, a missing run directory, or a run whose input
            does not fit ``ds``.
    """
    if not entries:
        raise ConfigError("no models given; pass model names (e.g. plain20,resnet20) or run directories")
    fresh_norm = Normalization.from_dataset(ds, "channel")  # fresh models see the dataset's statistics
    subjects = [
        _trained(entry, ds) if is_run(entry) else _fresh(entry, ds, seed, model_kwargs or {}, fresh_norm)
        for entry in entries
    ]
    for s in subjects:
        # Checkpointing recomputes blocks, so forward hooks would fire twice: analyses need it off.
        if isinstance(s.model, StagedNet):
            s.model.activation_checkpointing = False
    return subjects


def _trained(entry: str, ds: ArrayDataset) -> Subject:
    from reslab.engine import load_run
    from reslab.models import model_info

    path = Path(entry).expanduser()
    if not path.exists():
        raise ConfigError(f"run directory {entry} does not exist; pass a run directory or a model name")
    model, info = load_run(path)
    if tuple(info.input_shape) != ds.image_shape or len(info.classes) != ds.num_classes:
        raise ConfigError(
            f"{entry} was trained on {len(info.classes)} classes of {tuple(info.input_shape)} images, "
            f"but {ds.name} has {ds.num_classes} of {ds.image_shape}; pick a matching --dataset (or "
            "--image-size)"
        )
    spec = model_info(info.config.model)
    label = path.name if path.is_dir() else path.stem
    name, kwargs = info.config.model, dict(info.config.model_kwargs)
    return Subject(
        label, name, model, spec.residual, spec.depth, spec.family, True, info.norm, str(path), kwargs, entry
    )


def _fresh(entry: str, ds: ArrayDataset, seed: int, kwargs: dict[str, Any], norm: Normalization) -> Subject:
    """A fresh model. ``entry`` is a name, optionally with options of its own that win over the shared
    ``kwargs`` (``resnet56:shortcut_kind=scaling``): one study can hold one net with different options."""
    from reslab.models import build_model, model_info
    from reslab.models.options import parse_entry

    name, options = parse_entry(entry)
    spec = model_info(name)  # ConfigError with close matches for a typo
    torch.manual_seed(seed)  # the same seed gives plain and residual twins comparable draws
    built = {**kwargs, **options}
    model = build_model(name, num_classes=ds.num_classes, input_shape=ds.image_shape, **built)
    fresh = "fresh (at initialisation)"
    return Subject(
        entry, name, model, spec.residual, spec.depth, spec.family, False, norm, fresh, built, entry
    )


def split_entries(values: list[str]) -> list[str]:
    """``["a,b", "runs/x"]`` -> ``["a", "b", "runs/x"]``: names may be comma-separated or separate args."""
    return [part.strip() for value in values for part in value.split(",") if part.strip()]


def open_dataset(
    dataset: str | None,
    entries: list[str],
    data_dir: str | None,
    *,
    download: bool = True,
    image_size: int | None = None,
    passed: PassedData | None = None,
) -> ArrayDataset:
    """The dataset to analyse on: data ``passed`` in memory, else ``--dataset``, else the first run's own,
    else ``mnist5k``. A run's own dataset is read as the run read it (its ``--image-size``, its validation
    split and split seed); another folder gets the run's ``--image-size`` unless ``image_size`` is given."""
    if passed is not None:
        return passed.resident()
    entry, run = first_run(entries) or ("", {})
    name = dataset or run.get("dataset") or "mnist5k"
    if is_passed(name):
        raise ConfigError(
            f"{entry or name} trained on data passed in memory ({name}); pass it again with data=(x, y) "
            "(from Python: reslab.responses(..., data=...)), or choose a --dataset"
        )
    same = name == run.get("dataset")
    if image_size is None and name.strip().lower().startswith("folder:"):
        image_size = run.get("image_size")
    return load_dataset(
        name, data_dir or run.get("data_dir"), download=download, image_size=image_size,
        seed=run.get("split_seed", 0) if same else 0, val_split=run.get("val_split") if same else None,
    )  # fmt: skip


def fixed_batch(
    ds: ArrayDataset, norm: Normalization, n: int, *, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed, seeded subset of ``n`` training images (normalised, float32) and their labels.

    Every analysis of a set of models looks at the same images, so their numbers compare like for like.
    Returns ``x`` (n, C, H, W) and ``y`` (n,); ``n`` is capped at the size of the train split.
    """
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(ds.train_x.shape[0], generator=g)[: max(1, n)]
    return norm.apply(ds.train_x[idx]), ds.train_y[idx]
