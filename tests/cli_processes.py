"""Run `scratchlm` commands as child processes without paying torch's import for each one.

Every fresh Python process spends about two seconds importing torch, which would make a catalogue of
bad inputs or twenty kill-and-resume cycles slow. `CommandServer` starts one warm process that imports
scratchlm's command modules once; for each command it forks a child that points stdout/stderr at files,
runs `scratchlm.cli.main(argv)` exactly as the `scratchlm` console script does, and exits with its
status. Children are ordinary processes: they can be SIGKILLed, and their exit status is reported like
`subprocess` does (negative for a signal). `tests/test_bad_inputs.py` checks that a few commands give the
same output here as through `python -m scratchlm.cli`.

Run as a script, this module is the server: JSON requests on stdin, JSON replies on stdout.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

# Deterministic and polite on a shared 2-core machine: one intra-op thread per child.
CHILD_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


@dataclass
class Finished:
    status: int  # exit status; -N when killed by signal N
    stdout: str
    stderr: str


class CommandServer:
    """`with CommandServer() as server: pid = server.launch(argv, out_dir)`, then `server.wait(pid)`."""

    def __init__(self, env: dict[str, str] | None = None) -> None:
        self._proc = subprocess.Popen(
            [sys.executable, __file__],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, **CHILD_ENV, **(env or {})},
        )
        self._outputs: dict[int, tuple[Path, Path]] = {}
        self._request({"op": "ping"})  # returns once the imports are done

    def __enter__(self) -> CommandServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def launch(
        self,
        argv: list[str],
        log_dir: Path,
        *,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        max_file_bytes: int | None = None,
    ) -> int:
        """Start `scratchlm ARGV` in a child; its stdout and stderr go to files in `log_dir`. Returns its pid.

        `max_file_bytes` sets RLIMIT_FSIZE in the child, so a larger write fails with a real EFBIG.
        """
        log_dir.mkdir(parents=True, exist_ok=True)
        out, err = log_dir / "stdout.txt", log_dir / "stderr.txt"
        out.touch(), err.touch()  # readable before the child gets to open them
        request = {"op": "launch", "argv": argv, "out": str(out), "err": str(err), "env": env or {}}
        request.update(cwd=str(cwd) if cwd else None, max_file_bytes=max_file_bytes)
        pid = self._request(request)["pid"]
        self._outputs[pid] = (out, err)
        return pid

    def wait(self, pid: int) -> Finished:
        """Block until child `pid` ends; its status and what it printed."""
        status = self._request({"op": "wait", "pid": pid})["status"]
        out, err = self._outputs.pop(pid)
        return Finished(status, out.read_text(errors="replace"), err.read_text(errors="replace"))

    def run(self, argv: list[str], log_dir: Path, **kwargs: object) -> Finished:
        return self.wait(self.launch(argv, log_dir, **kwargs))  # type: ignore[arg-type]

    def close(self) -> None:
        if self._proc.poll() is None:
            assert self._proc.stdin is not None
            self._proc.stdin.close()
            self._proc.wait(timeout=30)

    def _request(self, request: dict) -> dict:
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._proc.stdin.write(json.dumps(request) + "\n")
        self._proc.stdin.flush()
        line = self._proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the command server died (status {self._proc.wait()})")
        return json.loads(line)


# ------------------------------------------------------------------------------------------------ server


def _child(request: dict) -> None:
    """In the forked child: redirect, run the command as the console script would, and never return."""
    status = 1
    try:
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)  # the server's request pipe is not the command's stdin
        for fd, path in ((1, request["out"]), (2, request["err"])):
            os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), fd)
        os.environ.update(request["env"])
        if request["cwd"]:
            os.chdir(request["cwd"])
        if request["max_file_bytes"] is not None:
            import resource
            import signal

            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG
            resource.setrlimit(resource.RLIMIT_FSIZE, (request["max_file_bytes"],) * 2)
        sys.argv = ["scratchlm", *request["argv"]]
        from scratchlm.cli import main

        try:
            status = main(request["argv"])
        except SystemExit as exc:  # argparse usage errors and --help
            status = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            if isinstance(exc.code, str):
                print(exc.code, file=sys.stderr)
    except BaseException:
        import traceback

        traceback.print_exc()  # what the interpreter prints for an uncaught exception
        status = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)


def _serve() -> None:
    # The imports every command needs, done once here instead of once per child.
    import torch._dynamo  # noqa: F401 - torch.optim.Optimizer imports it on first use: 2 s per process otherwise

    import scratchlm.cli
    import scratchlm.data.text
    import scratchlm.data.trajectory_io
    import scratchlm.train.trainer

    scratchlm.cli.build_parser()  # imports every command module
    for line in sys.stdin:
        request = json.loads(line)
        if request["op"] == "launch":
            sys.stdout.flush()
            pid = os.fork()
            if pid == 0:
                _child(request)
            reply: dict = {"pid": pid}
        elif request["op"] == "wait":
            _, raw = os.waitpid(request["pid"], 0)
            reply = {"status": os.waitstatus_to_exitcode(raw)}
        else:
            reply = {"ok": True}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    _serve()
