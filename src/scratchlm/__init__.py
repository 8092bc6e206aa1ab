"""scratchlm: decoder-only transformer LMs built from scratch, for text and robot-action tokens."""

from scratchlm.config import ModelConfig
from scratchlm.errors import ScratchLMError
from scratchlm.model import TransformerLM

__version__ = "0.1.0"

__all__ = ["ModelConfig", "ScratchLMError", "TransformerLM", "__version__"]
