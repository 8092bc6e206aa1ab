"""Generation: greedy and sampled decoding, stop tokens, the context limit, bad input, and `scratchlm generate`."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pytest
import torch

from scratchlm.cli import main
from scratchlm.config import ModelConfig
from scratchlm.data.text import prepare_text_corpus
from scratchlm.errors import ConfigError, ShapeError
from scratchlm.infer.generate import decode_steps, generate
from scratchlm.model import TransformerLM
from scratchlm.presets import resolve_run_config, to_toml
from scratchlm.train.checkpoint import save_checkpoint

VOCAB = 29
CONTEXT = 32


def make_model(**overrides: object) -> TransformerLM:
    config = ModelConfig(vocab_size=VOCAB, context_length=CONTEXT, d_model=32, num_layers=2, num_heads=4, **overrides)
    return TransformerLM(config)


def test_prompts_may_be_numpy_rows_and_decoding_skips_the_per_step_id_check() -> None:
    import numpy as np

    model = make_model()
    as_lists = generate(model, [[3, 1, 4], [2, 7, 1]], max_new_tokens=4, temperature=0.0).tokens
    assert generate(model, np.array([[3, 1, 4], [2, 7, 1]]), max_new_tokens=4, temperature=0.0).tokens == as_lists
    assert generate(model, torch.tensor([[3, 1, 4], [2, 7, 1]]), max_new_tokens=4, temperature=0.0).tokens == as_lists
    # Prompts are checked on the host once; the forward's id check (a device->host sync) is off per step.
    seen: list[bool] = []
    model.register_forward_pre_hook(lambda module, args: seen.append(module.check_token_ids))
    generate(model, [[3, 1, 4]], max_new_tokens=4, temperature=0.0)
    assert seen and not any(seen) and model.check_token_ids
    with pytest.raises(ShapeError, match="vocabulary"):
        generate(model, [[3, 1, VOCAB]], max_new_tokens=4)


def test_the_conveniences_a_python_user_reaches_for() -> None:
    import scratchlm

    model = make_model()
    assert scratchlm.generate is generate  # from scratchlm import generate, load_model
    greedy = generate(model, [[3, 1, 4]], max_new_tokens=6, temperature=0.0)
    assert generate(model, [3, 1, 4], max_new_tokens=6, temperature=0.0).tokens == greedy.tokens  # one prompt
    assert generate(model, [[3, 1, 4]], max_new_tokens=6, temperature=1e-300).tokens == greedy.tokens
    seeded = generate(model, [[3, 1, 4]], max_new_tokens=8, seed=7).tokens
    assert seeded == generate(model, [[3, 1, 4]], max_new_tokens=8, generator=torch.Generator().manual_seed(7)).tokens
    first = greedy.tokens[0][0]
    assert generate(model, [[3, 1, 4]], max_new_tokens=6, temperature=0.0, stop_tokens=first).tokens == [[]]


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"prompts": ["hello"]}, ShapeError, "prompt 0 is text ('hello'), not token ids"),
        ({"prompts": [[1.5, 2.7]]}, ShapeError, "prompt 0 must be a list of integer token ids"),
        ({"prompts": [[1, 2]], "temperature": None}, ConfigError, "must be a number >= 0"),
        ({"prompts": [[1, 2]], "stop_tokens": "x"}, ConfigError, "stop_tokens must be a token id or a list"),
        ({"prompts": [[1, 2]], "seed": 1, "generator": torch.Generator()}, ConfigError, "a seed or a generator"),
    ],
)
def test_python_misuse_of_generate_is_one_clear_error(kwargs: dict, error: type, message: str) -> None:
    prompts = kwargs.pop("prompts")
    with pytest.raises(error, match=re.escape(message)):
        generate(make_model(), prompts, max_new_tokens=2, **kwargs)


def test_greedy_generation_is_the_argmax_loop_over_the_plain_forward() -> None:
    model = make_model().eval()
    prompt = [3, 1, 4, 1, 5]
    sequence = list(prompt)
    with torch.no_grad():
        for _ in range(12):
            sequence.append(int(model(torch.tensor([sequence]))[0][0, -1].argmax()))
    result = generate(model, [prompt], max_new_tokens=12, temperature=0.0)
    assert result.sequences() == [sequence]
    assert result.stopped == [False]


def test_a_seeded_generator_reproduces_samples_with_and_without_the_cache() -> None:
    model = make_model()
    prompts = [[1, 2, 3], [4, 5, 6, 7, 8]]

    def sample(seed: int, use_cache: bool = True) -> list[list[int]]:
        generator = torch.Generator().manual_seed(seed)
        kwargs = {"temperature": 1.0, "top_k": 10, "top_p": 0.9, "generator": generator, "use_cache": use_cache}
        return generate(model, prompts, max_new_tokens=20, **kwargs).tokens

    assert sample(7) == sample(7) == sample(7, use_cache=False)
    assert sample(7) != sample(8)


def test_top_k_one_and_a_tiny_top_p_are_greedy() -> None:
    model = make_model()
    greedy = generate(model, [[2, 7]], max_new_tokens=10, temperature=0.0).tokens
    generator = torch.Generator().manual_seed(0)
    assert generate(model, [[2, 7]], max_new_tokens=10, temperature=2.0, top_k=1, generator=generator).tokens == greedy
    assert (
        generate(model, [[2, 7]], max_new_tokens=10, temperature=2.0, top_p=1e-6, generator=generator).tokens == greedy
    )
    # Below float32's smallest normal number p rounds to 0 in the comparison: the top token must stay anyway.
    for tiny in (1e-300, 1e-40):
        assert generate(model, [[2, 7]], max_new_tokens=10, top_p=tiny, generator=generator).tokens == greedy


def test_rows_stop_at_their_first_stop_token_and_generation_ends_when_all_have() -> None:
    model = make_model()
    prompts = [[1, 2], [9, 8, 7]]
    free = generate(model, prompts, max_new_tokens=15, temperature=0.0).tokens
    stop = free[0][3]
    first = free[0].index(stop)
    result = generate(model, prompts, max_new_tokens=15, temperature=0.0, stop_tokens=[stop])
    assert result.tokens[0] == free[0][:first] and result.stopped[0]
    row1_end = free[1].index(stop) if stop in free[1] else len(free[1])
    assert result.tokens[1] == free[1][:row1_end] and result.stopped[1] == (stop in free[1])
    steps = list(decode_steps(model, prompts[:1], max_new_tokens=15, temperature=0.0, stop_tokens=[stop]))
    assert len(steps) == first + 1 and bool(steps[-1].done_B.all())


def test_vocab_limit_keeps_samples_inside_the_tokenizer_vocabulary() -> None:
    model = make_model()
    generator = torch.Generator().manual_seed(0)
    result = generate(model, [[1]] * 8, max_new_tokens=20, temperature=5.0, vocab_limit=4, generator=generator)
    assert max(max(row) for row in result.tokens) < 4


def test_generation_leaves_the_model_mode_and_grad_mode_as_it_found_them() -> None:
    model = make_model().train()
    for _ in decode_steps(model, [[1, 2]], max_new_tokens=3):
        assert torch.is_grad_enabled()  # no_grad covers the decoder's own code, not the caller's
        assert not model.training
    assert model.training


@pytest.mark.parametrize(
    ("prompts", "kwargs", "error", "match"),
    [
        ([[]], {}, ShapeError, "prompt 0 is empty"),
        ([], {}, ShapeError, "no prompts"),
        ("hello", {}, ShapeError, "not text"),
        ([[1, VOCAB]], {}, ShapeError, "vocabulary"),
        ([[1] * CONTEXT], {}, ConfigError, "shorten the prompt to at most 31"),
        ([[1] * 10], {"max_new_tokens": 23}, ConfigError, "generate at most 22 tokens"),
        ([[1]], {"max_new_tokens": 0}, ConfigError, "max_new_tokens"),
        ([[1]], {"temperature": -0.5}, ConfigError, "temperature"),
        ([[1]], {"top_p": 0.0}, ConfigError, "top_p"),
        ([[1]], {"top_p": 1.01}, ConfigError, "top_p"),
        ([[1]], {"top_k": 0}, ConfigError, "top_k"),
        ([[1]], {"stop_tokens": [VOCAB + 3]}, ConfigError, "stop tokens"),
        ([[1]], {"vocab_limit": VOCAB + 1}, ConfigError, "vocab_limit"),
    ],
)
def test_bad_generation_arguments_are_refused_before_any_work(prompts, kwargs, error, match) -> None:
    kwargs = {"max_new_tokens": 4, **kwargs}
    with pytest.raises(error, match=match):
        decode_steps(make_model(), prompts, **kwargs)  # raises on the call, before the first step


def test_a_non_causal_model_is_refused_the_cache_on_the_call() -> None:
    model = make_model(causal=False)
    with pytest.raises(ConfigError, match="without the causal mask"):
        decode_steps(model, [[1, 2]], max_new_tokens=3)  # before the first step, so the CLI prints nothing first
    assert len(list(decode_steps(model, [[1, 2]], max_new_tokens=3, use_cache=False))) == 3


def test_stop_tokens_may_be_none_or_an_array() -> None:
    import numpy as np

    model = make_model()
    plain = generate(model, [[1, 2]], max_new_tokens=5, seed=4).tokens
    assert generate(model, [[1, 2]], max_new_tokens=5, seed=4, stop_tokens=None).tokens == plain
    stop = plain[0][2]
    for stops in (np.array(stop), np.array([stop, VOCAB - 1]), torch.tensor([stop])):
        assert generate(model, [[1, 2]], max_new_tokens=5, seed=4, stop_tokens=stops).tokens[0] == plain[0][:2]


# ------------------------------------------------------------------------------------------ the CLI


@pytest.fixture(scope="module")
def text_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A text run (char tokenizer with <|endoftext|>, random weights): data/, run/ and run-small-vocab/."""
    root = tmp_path_factory.mktemp("gen")
    (root / "in.txt").write_text("the quick brown fox jumps over the lazy dog.<|endoftext|>" * 40, encoding="utf-8")
    meta = prepare_text_corpus(root / "in.txt", root / "data", "char", special_tokens=["<|endoftext|>"], progress=False)
    for name, vocab in (("run", meta["vocab_size"]), ("run-small-vocab", meta["vocab_size"] - 5)):
        overrides = ['data.kind="tokens"', f"data.path={json.dumps(str(root / 'data'))}", f"model.vocab_size={vocab}"]
        config = resolve_run_config("debug", None, overrides)
        (root / name / "checkpoints").mkdir(parents=True)
        (root / name / "config.toml").write_text(to_toml(config.to_tables()), encoding="utf-8")
        save_checkpoint(TransformerLM(config.model), None, 0, root / name / "checkpoints" / "last.pt")
    return root


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    captured = capsys.readouterr()
    errors = [line for line in captured.err.splitlines() if line.startswith("scratchlm: error:")]
    assert len(errors) == 1 and "Traceback" not in captured.err, captured.err
    assert captured.out == "", "nothing is printed before an argument error"
    return errors[0]


def test_cli_streams_a_continuation_that_the_cache_does_not_change(
    text_run: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    base = ["generate", "--run", str(text_run / "run"), "--prompt", "the fox", "--max-new-tokens", "12"]
    outputs = []
    for extra in (["--temperature", "0"], ["--temperature", "0", "--no-cache"], ["--seed", "3"], ["--seed", "3"]):
        with caplog.at_level(logging.INFO):
            assert main([*base, *extra]) == 0
        outputs.append(capsys.readouterr().out)
    assert outputs[0] == outputs[1] and outputs[2] == outputs[3]
    # The speed of each, with and without the cache: the course's inference-speed comparison.
    speeds = [m for m in caplog.messages if re.match(r"generated \d+ tokens in [\d.]+ s: [\d.]+ tokens/s", m)]
    assert len(speeds) == 4 and "(KV cache off," in speeds[1] and "(KV cache on," in speeds[0]
    assert all(out.startswith("the fox") for out in outputs)
    prompt_file = text_run / "prompt.txt"
    prompt_file.write_text("lazy", encoding="utf-8")
    assert main(["generate", "--run", str(text_run / "run"), "--prompt-file", str(prompt_file), "--num-samples", "3",
                 "--max-new-tokens", "5", "--top-k", "5", "--top-p", "0.8", "--seed", "1"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert out.count("--- sample ") == 3 and out.count("\nlazy") == 3


def test_cli_compiled_decoding_streams_the_eager_continuation(
    text_run: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="scratchlm.infer.compiled_step")
    base = ["generate", "--run", str(text_run / "run"), "--prompt", "the fox", "--max-new-tokens", "12"]
    outputs = []
    for extra in ([], ["--compile"]):
        assert main([*base, "--temperature", "0", *extra]) == 0
        outputs.append(capsys.readouterr().out)
    assert outputs[1] == outputs[0]
    # The compile time is logged (stderr in a terminal), apart from the text on stdout.
    assert [r.compile_s > 0 for r in caplog.records if r.name == "scratchlm.infer.compiled_step"] == [True]


def test_cli_empty_prompt_starts_from_end_of_text(text_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["generate", "--run", str(text_run / "run"), "--prompt", "", "--max-new-tokens", "4"]) == 0
    assert capsys.readouterr().out.endswith("\n")


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        (["--prompt", "fox", "--top-p", "1.5"], "top_p (--top-p) must be in (0, 1]"),
        (["--prompt", "fox", "--temperature", "-1"], "temperature (--temperature) must be >= 0"),
        (["--prompt", "fox" * 30], "shorten the prompt"),
        (["--prompt", "fox", "--max-new-tokens", "500"], "generate at most"),
        (["--prompt", "fox", "--checkpoint", "best"], "does not exist"),
        (["--prompt", "fox€"], "not in this char tokenizer"),
        (["--from-val", "0"], "need a trajectory run"),
        (["--prompt-actions", "1,2"], "needs a trajectory run"),
        (["--prompt", "fox", "--compile", "--no-cache"], "cannot be combined with --no-cache"),
        (["--prompt", "fox", "--cuda-graph"], "--cuda-graph needs a CUDA device"),
        (["--from-val", "0", "--compile"], "rollouts feed several tokens per step"),
    ],
)
def test_cli_bad_input_is_one_clear_line(
    text_run: Path, capsys: pytest.CaptureFixture[str], extra: list[str], match: str
) -> None:
    assert main(["generate", "--run", str(text_run / "run"), *extra]) == 2
    assert match in one_error_line(capsys)


def test_cli_refuses_a_checkpoint_from_another_vocabulary(text_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["generate", "--run", str(text_run / "run-small-vocab"), "--prompt", "fox"]) == 2
    assert "different vocabularies" in one_error_line(capsys)


def test_cli_refuses_another_runs_checkpoint_with_a_larger_vocabulary(
    text_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import dataclasses

    import tomllib

    from scratchlm.config import RunConfig

    config = RunConfig.from_tables(tomllib.loads((text_run / "run" / "config.toml").read_text()))
    wider = dataclasses.replace(config.model, vocab_size=config.model.vocab_size + 40)
    save_checkpoint(TransformerLM(wider), None, 0, tmp_path / "other.pt")
    args = ["generate", "--run", str(text_run / "run"), "--checkpoint", str(tmp_path / "other.pt"), "--prompt", "fox"]
    assert main(args) == 2
    assert "so it comes from another run" in one_error_line(capsys)


def test_cli_refuses_a_checkpoint_with_nan_weights(
    text_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import tomllib

    from scratchlm.config import RunConfig

    config = RunConfig.from_tables(tomllib.loads((text_run / "run" / "config.toml").read_text()))
    model = TransformerLM(config.model)
    with torch.no_grad():
        model.lm_head.weight[3, 0] = float("nan")
    save_checkpoint(model, None, 0, tmp_path / "diverged.pt")
    for temperature in ("1", "0"):  # argmax of NaN logits would print noise without a word
        args = ["generate", "--run", str(text_run / "run"), "--checkpoint", str(tmp_path / "diverged.pt"),
                "--prompt", "fox", "--temperature", temperature]  # fmt: skip
        assert main(args) == 2
        assert "holds NaN or infinite weights (lm_head.weight)" in one_error_line(capsys)
