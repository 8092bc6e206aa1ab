"""Tokenizers: byte-level BPE (training, pure and tiktoken-backed encoding, GPT-2's files) and characters."""

from scratchlm.tokenizers.base import TextTokenizer, load_tokenizer
from scratchlm.tokenizers.bpe import train_bpe
from scratchlm.tokenizers.char import CharTokenizer
from scratchlm.tokenizers.tokenizer import Tokenizer

__all__ = ["CharTokenizer", "TextTokenizer", "Tokenizer", "load_tokenizer", "train_bpe"]
