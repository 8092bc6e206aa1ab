"""The Samples section of a text run's report: continuations drawn from its best checkpoint with a fixed
seed and decoded by the run's tokenizer, shown in fenced code blocks that generated text cannot break."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from scratchlm.analysis.document import Block, Code, Heading, Paragraph
from scratchlm.errors import ScratchLMError
from scratchlm.tokenizers.base import END_OF_TEXT

if TYPE_CHECKING:
    from scratchlm.infer.runs import LoadedRun

# Text runs' samples: fixed, so a rebuilt report shows the same text for the same checkpoint.
SAMPLE_SEED = 0
SAMPLE_COUNT = 2
SAMPLE_NEW_TOKENS = 200
SAMPLE_TEMPERATURE = 0.8
SAMPLE_TOP_K = 200


@dataclass
class TextSamples:
    """Continuations of one prompt drawn from a text run's checkpoint (what the Samples section shows)."""

    checkpoint: Path
    prompt: str  # how the prompt reads in the page, e.g. "a newline"
    texts: list[str]  # the decoded continuations, prompt left out
    stopped: list[bool]  # True: the row ended at <|endoftext|>
    new_tokens: int
    seed: int
    temperature: float
    top_k: int | None


def text_samples(
    run_dir: str | Path,
    *,
    seed: int = SAMPLE_SEED,
    count: int = SAMPLE_COUNT,
    max_new_tokens: int = SAMPLE_NEW_TOKENS,
    temperature: float = SAMPLE_TEMPERATURE,
    top_k: int | None = SAMPLE_TOP_K,
    loaded: LoadedRun | None = None,
) -> TextSamples | str:
    """`count` continuations from a text run's best checkpoint (else its last), drawn with a generator seeded
    with `seed` and decoded by the tokenizer of the run's data directory; the same arguments give the same
    text. Without a tokenizer that loads and fits the checkpoint, the sentence that says so instead."""
    from scratchlm.infer.generate import generate
    from scratchlm.infer.runs import end_of_text_ids, load_run, sampling_vocab_limit, text_tokenizer

    loaded = loaded if loaded is not None else load_run(run_dir)
    model = loaded.model
    try:
        tokenizer = text_tokenizer(loaded.config, model)
    except ScratchLMError as exc:
        reason = str(exc).rstrip(".")
        return f"No samples: the tokenizer of this run's data (`{loaded.config.data.path}`) cannot be used: {reason}."
    stop = end_of_text_ids(tokenizer)
    if stop:
        prompt_ids, prompt = stop, f"`{END_OF_TEXT}` (the start of a document)"
    else:
        prompt_ids, prompt = tokenizer.encode("\n"), "a newline"  # nanoGPT's start
        if not prompt_ids:  # a tokenizer that cannot spell a newline: the first token of the validation split
            from scratchlm.data.text import load_token_dir

            prompt_ids = [int(load_token_dir(loaded.config.data.path).val[0])]
            prompt = "the first token of the validation split"
    context = model.config.context_length
    new_tokens = max(1, min(max_new_tokens, context - len(prompt_ids)))
    result = generate(
        model, [prompt_ids] * count, max_new_tokens=new_tokens, temperature=temperature, top_k=top_k,
        stop_tokens=stop, seed=seed, vocab_limit=sampling_vocab_limit(tokenizer, model),
    )  # fmt: skip
    texts = [tokenizer.decode(tokens) for tokens in result.tokens]
    return TextSamples(loaded.checkpoint, prompt, texts, result.stopped, new_tokens, seed, temperature, top_k)


def samples_blocks(samples: TextSamples | str) -> list[Block]:
    blocks: list[Block] = [Heading(2, "Samples")]
    if isinstance(samples, str):
        return [*blocks, Paragraph(samples)]
    top_k = f", top-k {samples.top_k}" if samples.top_k is not None else ""
    blocks.append(
        Paragraph(
            f"{len(samples.texts)} continuation{'s' if len(samples.texts) != 1 else ''} of {samples.prompt} from "
            f"`{samples.checkpoint.as_posix()}`: up to {samples.new_tokens} new tokens at temperature "
            f"{samples.temperature:g}{top_k}, seed {samples.seed}, so rebuilding the report draws the same text."
        )
    )
    for i, (text, stopped) in enumerate(zip(samples.texts, samples.stopped, strict=True), 1):
        end = f", ended at {END_OF_TEXT}" if stopped else ""
        blocks.append(Code(code_block_text(text), "text", f"sample {i}{end}"))
    return blocks


def code_block_text(text: str) -> str:
    """Generated text made safe inside a fenced code block of Markdown, MDX and HTML: control characters
    (a model may emit any its vocabulary holds) are written as escapes, and a line that would close the
    fence gets a zero-width space before its backticks. Braces and angle brackets are literal in a fence."""
    text = text.replace("\r\n", "\n")
    shown = "".join(
        ch if ch in "\n\t" or unicodedata.category(ch) not in ("Cc", "Zl", "Zp") else _escape(ch) for ch in text
    )
    return re.sub(r"(?m)^( {0,3})(`{3,})", "\\1\u200b\\2", shown)


def _escape(ch: str) -> str:
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
