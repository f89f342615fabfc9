"""The paper's experiment grid as one call: :func:`run_study` (see ``study.py``)."""
from .study import (DEFAULT_METHODS, DEFAULT_SPARSITIES, DENSE_FINETUNED, StudyResult,
                    StudySpec, cell_id, default_selections, grid, run_study)

__all__ = ["DEFAULT_METHODS", "DEFAULT_SPARSITIES", "DENSE_FINETUNED", "StudyResult",
           "StudySpec", "cell_id", "default_selections", "grid", "run_study"]
