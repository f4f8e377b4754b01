"""mace_fast: MACE-style interatomic potentials with fused CUDA kernels.

>>> from mace_fast import MACE, ModelConfig, load_model, MaceFastCalculator
"""

from .calculator import MaceFastCalculator
from .config import ModelConfig
from .model import MACE
from .model_file import load_model, save_model

__all__ = ["MACE", "ModelConfig", "MaceFastCalculator", "load_model", "save_model"]
__version__ = "0.1.0"
