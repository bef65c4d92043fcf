"""dsink: classifiers from long-tailed, noisily labelled data (D-SINK and the field's baselines)."""

__version__ = "0.1.0"

from .config import RunConfig, load_config  # noqa: E402
from .errors import InputError, SolverWarning, TrainingError  # noqa: E402


def surrogate_labels(*args, **kwargs):  # noqa: D103 - documented in dsink.ot.surrogate
    from .ot.surrogate import surrogate_labels as _impl

    return _impl(*args, **kwargs)


surrogate_labels.__doc__ = "D-SINK surrogate labels from any three probability arrays; see dsink.ot.surrogate_labels."

__all__ = ["InputError", "RunConfig", "SolverWarning", "TrainingError", "__version__", "surrogate_labels", "load_config"]
