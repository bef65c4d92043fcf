"""dsink: classifiers from long-tailed, noisily labelled data (D-SINK and the field's baselines)."""

__version__ = "0.1.0"

from .config import RunConfig, load_config  # noqa: E402
from .errors import InputError, SolverWarning, TrainingError  # noqa: E402

__all__ = ["InputError", "RunConfig", "SolverWarning", "TrainingError", "__version__", "load_config"]
