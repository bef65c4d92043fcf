"""dsink: classifiers from long-tailed, noisily labelled data (D-SINK and the field's baselines)."""

__version__ = "0.1.0"

from .config import RunConfig, load_config  # noqa: E402
from .errors import InputError, SolverWarning, TrainingError  # noqa: E402


def surrogate_labels(*args, **kwargs):  # noqa: D103 - documented in dsink.ot.surrogate
    from .ot.surrogate import surrogate_labels as _impl

    return _impl(*args, **kwargs)


surrogate_labels.__doc__ = "D-SINK surrogate labels from any three probability arrays; see dsink.ot.surrogate_labels."

# The registries' query API (timm style), imported on first use so that ``import dsink`` stays light.
_REGISTRY_API = {
    "dsink.methods": ("list_methods", "get_method", "method_info", "register_method"),
    "dsink.models": ("list_models", "get_model", "model_info", "register_model", "build_model"),
    "dsink.data": ("list_datasets", "get_dataset", "dataset_info", "register_dataset",
                   "list_noise_modes", "get_noise_mode", "noise_mode_info", "register_noise_mode"),
    "dsink.train.optim": ("list_optimizers", "get_optimizer", "optimizer_info", "register_optimizer"),
    "dsink.train.schedule": ("list_schedules", "get_schedule", "schedule_info", "register_schedule"),
    "dsink.registry": ("Registry",),
    "dsink.runs": ("RunDir",),  # a run directory and all of its I/O
}
# Optional parts, imported on first use like the above but left out of ``__all__`` (``from dsink import *`` must not
# need their extra dependencies): the scikit-learn estimator (pip install dsink[sklearn]).
_OPTIONAL = {"DSinkClassifier": "dsink.sklearn"}
_LAZY = {**{name: module for module, names in _REGISTRY_API.items() for name in names}, **_OPTIONAL}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'dsink' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))


__all__ = ["InputError", "RunConfig", "SolverWarning", "TrainingError", "__version__", "surrogate_labels",
           "load_config", *(name for name in _LAZY if name not in _OPTIONAL)]
