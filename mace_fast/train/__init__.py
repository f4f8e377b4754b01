"""Training and fine-tuning of MACE models from a YAML config (``mace-fast-train``).

Modules: :mod:`.config` (typed schema), :mod:`.data` (reading, splitting, batches),
:mod:`.statistics` (E0s, neighbours, scale/shift), :mod:`.loss`, :mod:`.metrics`,
:mod:`.optim` and :mod:`.ema`, :mod:`.trainer` (the loop), :mod:`.checkpoint`,
:mod:`.finetune`, :mod:`.plots`, :mod:`.run` (a whole run).
"""

from .config import ConfigError, TrainConfig, load_config
from .run import RunError, run_training

__all__ = ["ConfigError", "RunError", "TrainConfig", "load_config", "run_training"]
