"""The paper's experiment grid as one call: :func:`run_study` (see ``study.py``); its units
(``units.py``) run on an engine (``engine.py``: Ray by default, or serial)."""
from .engine import EngineOptions
from .study import (DEFAULT_METHODS, DEFAULT_SPARSITIES, DENSE_FINETUNED, StudyFailed,
                    StudyResult, StudySpec, cell_id, default_selections, grid, run_studies,
                    run_study)

__all__ = ["DEFAULT_METHODS", "DEFAULT_SPARSITIES", "DENSE_FINETUNED", "EngineOptions",
           "StudyFailed", "StudyResult", "StudySpec", "cell_id", "default_selections", "grid",
           "run_studies", "run_study"]
