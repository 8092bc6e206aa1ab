"""`scratchlm generate`: sample text from a run's checkpoint, or continue robot trajectories.

Text runs: `--prompt TEXT` or `--prompt-file F`, encoded with the tokenizer of the run's data directory;
the continuation streams to stdout as it is produced and ends at `<|endoftext|>` when the tokenizer has
it. An empty prompt starts from `<|endoftext|>` (or is an error without one).
Trajectory runs: `--prompt-actions 12,34,...` continues those action tokens (actions-only runs);
`--from-val K` rolls validation trajectory K out from its first --context-steps steps and prints predicted
against true actions; `--rollout N` does that for N validation trajectories and prints accuracy by horizon.
`--compile` runs the cached decode step through torch.compile (the compile time is logged on stderr) and
`--cuda-graph` replays it as a CUDA graph; together, the compiled step is what the graph captures.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scratchlm.tokenizers.base import END_OF_TEXT

if TYPE_CHECKING:
    from scratchlm.infer.generate import DecodeStep
    from scratchlm.infer.rollout import Rollout
    from scratchlm.infer.runs import LoadedRun
    from scratchlm.tokenizers.base import TextTokenizer

logger = logging.getLogger(__name__)

DEFAULT_TEXT_TOKENS = 256
DEFAULT_CONTEXT_STEPS = 10


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", required=True, metavar="DIR", help="a run directory (runs/NAME) or a checkpoint file")
    parser.add_argument(
        "--checkpoint", metavar="best|last|STEP|PATH", help="which checkpoint (default: best, else last)"
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--prompt", help="text to continue (text runs)")
    source.add_argument("--prompt-file", metavar="FILE", help="UTF-8 file whose text to continue (text runs)")
    source.add_argument("--prompt-actions", metavar="A,B,...", help="action tokens to continue (trajectory runs)")
    source.add_argument("--from-val", type=int, metavar="K", help="roll out validation trajectory K (trajectory runs)")
    source.add_argument(
        "--rollout", type=int, metavar="N", help="rollout metrics over N validation trajectories (0: all)"
    )
    parser.add_argument(
        "--max-new-tokens", type=int, metavar="N", help=f"tokens to generate (text default: {DEFAULT_TEXT_TOKENS})"
    )
    parser.add_argument("--temperature", type=float, help="0 is greedy (default: 1.0 for text, 0 for trajectories)")
    parser.add_argument("--top-k", type=int, metavar="K", help="sample among the K most likely tokens")
    parser.add_argument("--top-p", type=float, metavar="P", help="nucleus: the smallest set with probability >= P")
    parser.add_argument("--seed", type=int, help="seed of the sampler (default: a random one, reported on stderr)")
    parser.add_argument(
        "--num-samples", type=int, default=1, metavar="N",
        help="continuations of the prompt, sampled as one batch from one seeded generator (so with --seed S, "
        "sample 1 of 2 is not the lone sample of --num-samples 1)",
    )  # fmt: skip
    parser.add_argument("--no-cache", action="store_true", help="recompute every position each step (slow reference)")
    parser.add_argument(
        "--compile", action="store_true", help="compile the decode step with torch.compile (text and --prompt-actions)"
    )
    parser.add_argument("--cuda-graph", action="store_true", help="replay the decode step as a CUDA graph (CUDA only)")
    parser.add_argument(
        "--context-steps",
        type=int,
        default=DEFAULT_CONTEXT_STEPS,
        metavar="K",
        help=f"trajectory steps given before predicting (default {DEFAULT_CONTEXT_STEPS})",
    )
    parser.add_argument("--json", metavar="FILE", help="--rollout: also write the metrics here")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, mps or auto (default: cpu)")


def run(args: argparse.Namespace) -> int:
    import torch

    from scratchlm.device import resolve_device
    from scratchlm.errors import ConfigError
    from scratchlm.infer.generate import check_max_new_tokens
    from scratchlm.infer.runs import load_run
    from scratchlm.infer.sampling import check_sampling_args, seeded_generator

    if args.num_samples < 1:
        raise ConfigError(f"--num-samples must be >= 1, got {args.num_samples}.")
    if args.max_new_tokens is not None:
        check_max_new_tokens(args.max_new_tokens)
    text_mode = args.prompt is not None or args.prompt_file is not None
    for flag, value in (("--compile", args.compile), ("--cuda-graph", args.cuda_graph)):
        if value and args.no_cache:
            raise ConfigError(f"{flag} speeds up the cached decode step; it cannot be combined with --no-cache.")
        if value and not text_mode and args.prompt_actions is None:
            raise ConfigError(
                f"{flag} applies to --prompt, --prompt-file and --prompt-actions; rollouts feed several tokens "
                "per step and run eagerly."
            )
    rollout_mode = args.from_val is not None or args.rollout is not None
    if rollout_mode and args.num_samples != 1:
        raise ConfigError(
            "--num-samples applies to --prompt, --prompt-file and --prompt-actions; a rollout predicts each "
            "validation trajectory once (use --rollout N for more trajectories)."
        )
    if args.json and not rollout_mode:
        raise ConfigError("--json writes rollout metrics; give it with --rollout N or --from-val K.")
    if args.json:
        _check_json_target(args.json)
    temperature = args.temperature if args.temperature is not None else (1.0 if text_mode else 0.0)
    check_sampling_args(temperature, args.top_k, args.top_p)
    loaded = load_run(args.run, args.checkpoint, device=resolve_device(args.device))
    if args.json:
        _check_json_spares_the_run(args.json, loaded)
    device = loaded.model.token_embeddings.weight.device
    if args.cuda_graph and device.type != "cuda":
        raise ConfigError(f"--cuda-graph needs a CUDA device, but the model is on {device}; give --device cuda.")
    seed = args.seed if args.seed is not None else int(torch.seed() % 2**31)
    generator = seeded_generator(seed, device)
    sampling = {"temperature": temperature, "top_k": args.top_k, "top_p": args.top_p, "generator": generator}
    if text_mode or args.prompt_actions is not None:  # the token-by-token modes also take the step options
        sampling.update(compile=args.compile, cuda_graph=args.cuda_graph)
    mode = _text if text_mode else _prompt_actions if args.prompt_actions is not None else _rollout
    status = mode(args, loaded, sampling)
    # Said after the output, not before: a bad argument found while decoding then gets its one error line alone.
    if args.seed is None and temperature > 0:
        logger.info("sampled with --seed %d (pass it to draw the same tokens again)", seed)
    return status


def _check_json_target(json_path: str) -> None:
    """Refuse a --json path the metrics cannot be written to, before a rollout that may take minutes."""
    import tempfile

    from scratchlm.errors import ConfigError, WriteError
    from scratchlm.fileio import describe_os_error, refuse_special_file

    folder = Path(json_path).resolve().parent
    if not folder.is_dir():
        parent = Path(json_path).parent
        if folder.exists():
            raise ConfigError(f"--json {json_path}: {parent} is a file, not a folder; give a path in a folder.")
        raise ConfigError(f"--json {json_path}: its folder {parent} does not exist; create it first.")
    refuse_special_file(json_path, "--json")  # a directory would fail only at the end, a FIFO would block forever
    try:
        # The one sure test of a folder's writability (root passes os.access, /proc refuses new files anyway).
        with tempfile.NamedTemporaryFile(dir=folder, prefix=f".{Path(json_path).name}.", suffix=".probe"):
            pass
    except OSError as exc:
        message = describe_os_error(exc, json_path, note="nothing was computed")
        raise WriteError(message, exc.errno, json_path) from None


def _check_json_spares_the_run(json_path: str, loaded: LoadedRun) -> None:
    """Refuse a --json path that is the run's checkpoint or config: metrics written there would destroy it."""
    from scratchlm.errors import ConfigError

    target = Path(json_path).resolve()
    checkpoints = (loaded.run_dir / "checkpoints").resolve()
    if target in (loaded.checkpoint.resolve(), (loaded.run_dir / "config.toml").resolve()) or checkpoints in (
        target.parents
    ):
        raise ConfigError(
            f"--json {json_path} points at the checkpoint, the config or the checkpoints/ of the run being read; "
            f"write the metrics elsewhere, e.g. --json {loaded.run_dir / 'rollout.json'}."
        )


def _read_prompt_file(path: str) -> str:
    """The text of --prompt-file, or one sentence saying why it cannot be the prompt."""
    from scratchlm.errors import DataError
    from scratchlm.fileio import refuse_special_file

    refuse_special_file(path, "--prompt-file")  # a FIFO or /dev/zero would block or be read forever
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(
            f"--prompt-file {path} does not exist; check the path, or give the text itself with --prompt TEXT."
        ) from None
    except UnicodeDecodeError as exc:
        raise DataError(
            f"--prompt-file {path} is not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset {exc.start}); "
            "give a UTF-8 text file."
        ) from None
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise DataError(f"cannot read --prompt-file {path} ({reason}); give a UTF-8 text file you can read.") from None


def _text(args: argparse.Namespace, loaded: LoadedRun, sampling: dict[str, Any]) -> int:
    from scratchlm.errors import ConfigError
    from scratchlm.infer.generate import decode_steps, generate
    from scratchlm.infer.runs import end_of_text_ids, sampling_vocab_limit, text_tokenizer

    tokenizer = text_tokenizer(loaded.config, loaded.model)
    text = args.prompt if args.prompt_file is None else _read_prompt_file(args.prompt_file)
    stop = end_of_text_ids(tokenizer)
    ids = tokenizer.encode(text)
    if not ids:
        if not stop:
            raise ConfigError(
                f"the prompt is empty and this tokenizer has no {END_OF_TEXT} to start from; give --prompt TEXT."
            )
        ids = list(stop)
    room = loaded.model.config.context_length - len(ids)
    max_new = args.max_new_tokens or max(1, min(DEFAULT_TEXT_TOKENS, room))  # too long a prompt errs below
    options = {
        "max_new_tokens": max_new, "stop_tokens": stop, "use_cache": not args.no_cache,
        "vocab_limit": sampling_vocab_limit(tokenizer, loaded.model), **sampling,
    }  # fmt: skip
    start = time.perf_counter()
    if args.num_samples == 1:
        count, setup_s = _stream(decode_steps(loaded.model, [ids], **options), tokenizer, text)
        _log_speed(count, time.perf_counter() - start, not args.no_cache, setup_s)
        return 0
    result = generate(loaded.model, [ids] * args.num_samples, **options)
    _log_speed(sum(map(len, result.tokens)), time.perf_counter() - start, not args.no_cache, result.setup_s)
    for b, tokens in enumerate(result.tokens):
        print(f"--- sample {b + 1} ---")
        print(text + tokenizer.decode(tokens))
    return 0


def _log_speed(tokens: int, seconds: float, use_cache: bool, setup_s: float = 0.0) -> None:
    """Tokens per second on stderr, so `--no-cache` against the default is the course's speed comparison.

    A compile or graph capture (setup_s, once per shape) is left out of the time: it would otherwise swamp a
    short generation's rate (36 s of compile over 5 tokens read as 0.1 tokens/s).
    """
    seconds -= setup_s
    excluded = f"; {setup_s:.3f} s compiling/capturing the step excluded" if setup_s > 0 else ""
    logger.info(
        "generated %d tokens in %.3f s: %.1f tokens/s (KV cache %s, prefill and sampling included%s)",
        tokens, seconds, tokens / max(seconds, 1e-9), "on" if use_cache else "off", excluded,
    )  # fmt: skip


def _stream(steps: Iterable[DecodeStep], tokenizer: TextTokenizer, prompt_text: str) -> tuple[int, float]:
    """Print the prompt, then the continuation as it comes (held back only inside an unfinished UTF-8 character);
    return the number of tokens generated and the seconds spent building the decode step."""
    sys.stdout.write(prompt_text)
    sys.stdout.flush()
    new: list[int] = []
    printed = 0
    setup_s = 0.0
    for step in steps:
        setup_s = step.setup_s
        if bool(step.done_B[0]):
            break
        new.append(int(step.tokens_B[0]))
        text = tokenizer.decode(new)
        if not text.endswith("\ufffd"):
            sys.stdout.write(text[printed:])
            sys.stdout.flush()
            printed = len(text)
    sys.stdout.write(tokenizer.decode(new)[printed:] + "\n")
    sys.stdout.flush()
    return len(new), setup_s


def _prompt_actions(args: argparse.Namespace, loaded: LoadedRun, sampling: dict[str, Any]) -> int:
    from scratchlm.data.actions import COURSE_ACTION_VOCAB
    from scratchlm.errors import ConfigError
    from scratchlm.infer.generate import generate

    if loaded.config.data.kind != "trajectories":
        raise ConfigError("--prompt-actions needs a trajectory run; give this text run --prompt TEXT.")
    if loaded.config.data.layout != "actions":
        raise ConfigError(
            "--prompt-actions needs an actions-only run; a unified run reads states too, so use --from-val K."
        )
    try:
        actions = [int(a) for a in args.prompt_actions.replace(" ", "").split(",") if a]
    except ValueError:
        raise ConfigError(f"--prompt-actions must be comma-separated integers, got {args.prompt_actions!r}.") from None
    if not actions:
        raise ConfigError("--prompt-actions is empty; give at least one action token, e.g. --prompt-actions 12,34.")
    action_vocab = COURSE_ACTION_VOCAB  # an actions-only layout: ids are the action tokens themselves
    if min(actions) < 0 or max(actions) >= action_vocab:
        raise ConfigError(
            f"--prompt-actions must lie in [0, {action_vocab}), got ids in [{min(actions)}, {max(actions)}]."
        )
    max_new = args.max_new_tokens or max(1, loaded.model.config.context_length - len(actions))
    start = time.perf_counter()
    result = generate(
        loaded.model, [actions] * args.num_samples, max_new_tokens=max_new, use_cache=not args.no_cache,
        vocab_limit=action_vocab, **sampling,
    )  # fmt: skip
    _log_speed(sum(map(len, result.tokens)), time.perf_counter() - start, not args.no_cache, result.setup_s)
    for tokens in result.tokens:
        print(",".join(map(str, tokens)))
    return 0


def _rollout(args: argparse.Namespace, loaded: LoadedRun, sampling: dict[str, Any]) -> int:
    from scratchlm.errors import ConfigError
    from scratchlm.infer.rollout import rollout_actions, rollout_metrics
    from scratchlm.infer.runs import validation_trajectories

    val = validation_trajectories(loaded.config, loaded.model, loaded.checkpoint)
    steps = val.steps
    if not 1 <= args.context_steps < steps:
        raise ConfigError(
            f"--context-steps must be in [1, {steps - 1}] for {steps}-step trajectories, got {args.context_steps}."
        )
    last_step = steps if args.max_new_tokens is None else min(steps, args.context_steps + args.max_new_tokens)
    if args.from_val is not None:
        if not 0 <= args.from_val < len(val.tokens_NL):
            raise ConfigError(
                f"--from-val must be in [0, {len(val.tokens_NL) - 1}] (validation trajectories), got {args.from_val}."
            )
        rows_NL = val.tokens_NL[args.from_val : args.from_val + 1]
    else:
        if args.rollout < 0:
            raise ConfigError(f"--rollout must be >= 0 (0 = every validation trajectory), got {args.rollout}.")
        rows_NL = val.tokens_NL if args.rollout == 0 else val.tokens_NL[: args.rollout]
    rollout = rollout_actions(
        loaded.model, rows_NL[:, : last_step * val.tokens_per_step], tokens_per_step=val.tokens_per_step,
        action_offset=val.action_offset, action_vocab=val.action_vocab, context_steps=args.context_steps,
        use_cache=not args.no_cache, **sampling,
    )  # fmt: skip
    v2 = val.version == "v2"
    if args.from_val is not None:
        _print_trajectory(rollout, args.from_val, v2)
    metrics = rollout_metrics(rollout, v2_actions=v2)
    metrics.update(
        {"run": str(loaded.run_dir), "checkpoint": str(loaded.checkpoint), "temperature": sampling["temperature"]}
    )
    if args.rollout is not None:
        _print_horizons(metrics)
    if args.json:
        from scratchlm.fileio import atomic_write

        # Atomic: a write refused halfway (disk full) leaves an earlier metrics file whole, with a WriteError.
        with atomic_write(args.json, "w", encoding="utf-8") as fh:
            fh.write(json.dumps(metrics, indent=2) + "\n")
    return 0


def _print_trajectory(rollout: Rollout, index: int, v2: bool) -> None:
    from scratchlm.infer.rollout import V2_BINS_PER_OCTANT as PER_OCTANT

    true_H, pred_H = rollout.true_NH[0].tolist(), rollout.predicted_NH[0].tolist()
    print(f"validation trajectory {index}: {rollout.context_steps} steps given, {len(true_H)} predicted")
    print("step  true  pred  |diff|" + ("  octant t/p  magnitude t/p" if v2 else ""))
    for h, (true, pred) in enumerate(zip(true_H, pred_H, strict=True)):
        line = f"{rollout.context_steps + h:>4}  {true:>4}  {pred:>4}  {abs(true - pred):>6}"
        if v2:
            line += f"  {true // PER_OCTANT:>6}/{pred // PER_OCTANT:<3}  {true % PER_OCTANT:>9}/{pred % PER_OCTANT}"
        print(line.rstrip())
    exact = sum(t == p for t, p in zip(true_H, pred_H, strict=True)) / len(true_H)
    within = sum(abs(t - p) <= 2 for t, p in zip(true_H, pred_H, strict=True)) / len(true_H)
    print(f"exact {exact:.1%}, within ±2 {within:.1%}")


def _print_horizons(metrics: dict[str, Any]) -> None:
    names = [k for k in ("exact", "within_2", "octant", "magnitude_abs_error") if k in metrics]
    print(f"{metrics['num_trajectories']} trajectories, {metrics['context_steps']} steps given")
    print("horizon  " + "  ".join(names))
    for h, horizon in enumerate(metrics["horizon"]):
        print(f"{horizon:>7}  " + "  ".join(f"{metrics[n][h]:>{len(n)}.4f}" for n in names))
    print("   mean  " + "  ".join(f"{metrics['mean_' + n]:>{len(n)}.4f}" for n in names))
