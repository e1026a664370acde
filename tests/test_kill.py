"""kill -9 at random moments of a training that checkpoints every step: every checkpoint left on disk loads, each
resume continues from the newest complete one, and the finished run's scalars.jsonl has exactly one row per step
for the tags logged every step (none lost before a checkpoint, none repeated after a resume).

The first segment and the last one are ``python train.py`` processes. The killed segments in between are forked
from a server process that has already imported what train.py imports (``gan.cli``), then run ``train_main`` as
train.py does: separate processes, killed and resumed exactly as a real run, without paying the package's import
(seconds) a dozen times.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml

from gan.checkpoint import load_checkpoint
from tests.conftest import TINY

REPO = Path(__file__).resolve().parent.parent
KILLS = 12
STEPS = 150  # more than the killed segments reach together (at most about 11 steps each), so every kill hits a live run
SEED = int(os.environ.get("SPECTRAL_GAN_KILL_SEED", "20240607"))  # the kill moments' seed (printed on failure)
EVERY_STEP = ("loss/D/adv", "loss/D/cls", "loss/D/gp")  # with scalars.every 1, a row of these at every step
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}

# A process that imports gan.cli once, then forks one child per request; each child runs train_main(argv) in the
# request's folder with stdout/stderr to files, like `python train.py ARGV` there. Protocol: one JSON object per
# line; {"argv", "cwd", "stdout", "stderr"} -> {"pid"}; {"wait": pid} -> {"code"} (negative: killed by signal).
SERVER = r"""
import json, os, sys
sys.path.insert(0, sys.argv[1])
from gan.cli import train_main

for line in sys.stdin:
    request = json.loads(line)
    if "wait" in request:
        _, status = os.waitpid(request["wait"], 0)
        print(json.dumps({"code": os.waitstatus_to_exitcode(status)}), flush=True)
        continue
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.chdir(request["cwd"])
            null = os.open(os.devnull, os.O_RDONLY)
            os.dup2(null, 0)
            for fd, name in ((1, "stdout"), (2, "stderr")):
                handle = os.open(request[name], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                os.dup2(handle, fd)
            sys.argv = ["train.py", *request["argv"]]
            code = train_main(request["argv"])
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        except BaseException:
            import traceback
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    print(json.dumps({"pid": pid}), flush=True)
"""


class Forker:
    """The fork server: ``start`` a training child, ``wait`` for its exit code."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", SERVER, str(REPO)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=ENV,
        )

    def _ask(self, request: dict) -> dict:
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the fork server ended (exit code {self.proc.wait()})")
        return json.loads(line)

    def start(self, argv: list[str], cwd: Path, log: Path) -> int:
        request = {"argv": argv, "cwd": str(cwd), "stdout": str(log) + ".out", "stderr": str(log)}
        return self._ask(request)["pid"]

    def wait(self, pid: int) -> int:
        return self._ask({"wait": pid})["code"]

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


# ----------------------------------------------------------------------------------------------------- helpers
def _config(path: Path) -> Path:
    """TINY checkpointing and logging every step, its evaluation hooks off."""
    cfg = yaml.safe_load(TINY)
    cfg["train"].update(steps=STEPS)
    cfg["hooks"] = {
        **{hook: {"every": 0} for hook in ("images", "sigma", "lipschitz", "paired_l1", "fid", "stability", "norms")},
        "scalars": {"every": 1},
        "checkpoint": {"every": 1, "keep": 3},
        "nan_guard": {"every": 1},
    }
    path.write_text(yaml.safe_dump(cfg))
    return path


def _step_files(folder: Path) -> int:
    """The highest step among ``step_<N>.pt`` names (0 if none): written before last.pt, so the newest."""
    steps = [int(m.group(1)) for p in folder.glob("step_*.pt") if (m := re.match(r"step_(\d+)\.pt$", p.name))]
    return max(steps, default=0)


def _wait_beyond(folder: Path, step: int, alive, what: str, timeout: float = 120) -> None:
    """Until a step checkpoint beyond ``step`` exists; fails if ``alive()`` turns False first."""
    deadline = time.time() + timeout
    while _step_files(folder) <= step:
        assert alive(), f"{what} ended before writing a checkpoint beyond step {step}"
        assert time.time() < deadline, f"{what}: no checkpoint beyond step {step} within {timeout:.0f} s"
        time.sleep(0.02)


def _checkpoint_steps(folder: Path, context: str) -> dict[str, int]:
    """Every *.pt left in ``folder`` loads (gan.checkpoint's own checks); their steps by file name."""
    steps = {}
    for path in sorted(folder.glob("*.pt")):
        try:
            steps[path.name] = load_checkpoint(path)["step"]
        except Exception as exc:  # noqa: BLE001 - any failure to load is what this test reports
            pytest.fail(f"{context}: {path.name} does not load: {exc}")
    assert steps, f"{context}: no checkpoint left"
    return steps


def _rows(run: Path, context: str, torn_tail: bool) -> list[dict]:
    """scalars.jsonl's rows; a torn last line is allowed only where a kill may have cut it (``torn_tail``)."""
    lines = (run / "scalars.jsonl").read_text(encoding="utf-8").splitlines()
    rows = []
    for i, line in enumerate(lines):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            assert torn_tail and i == len(lines) - 1, f"{context}: unreadable line {i + 1} of scalars.jsonl: {line!r}"
    return rows


def _every_step_tags_once(rows: list[dict], last: int, context: str) -> None:
    """Each EVERY_STEP tag has exactly one row at each step 1..last (rows after ``last`` are not looked at)."""
    for tag in EVERY_STEP:
        steps = [row["step"] for row in rows if tag in row and row["step"] <= last]
        assert steps == list(range(1, last + 1)), (
            f"{context}: {tag} rows up to step {last}: missing {sorted(set(range(1, last + 1)) - set(steps))[:10]}, "
            f"repeated {sorted({s for s in steps if steps.count(s) > 1})[:10]}"
        )


def _resumed_from(log: Path) -> int:
    found = re.findall(r"resuming \S+ from step (\d+)", log.read_text(encoding="utf-8", errors="replace"))
    assert len(found) == 1, f"{log.name}: expected one 'resuming ... from step N' line:\n{log.read_text()[-1500:]}"
    return int(found[0])


def _after_kill(run: Path, context: str) -> int:
    """What a kill must leave: every checkpoint loads, and every step up to the newest one has its rows (the
    rows of a checkpoint's steps are flushed before it is written). Returns that newest step."""
    newest = max(_checkpoint_steps(run / "checkpoints", context).values())
    _every_step_tags_once(_rows(run, context, torn_tail=True), newest, context)
    return newest


def _train_py(*args: object) -> list[str]:
    return [sys.executable, str(REPO / "train.py"), *map(str, args)]


# ------------------------------------------------------------------------------------------------------- test
@pytest.mark.slow
def test_kill_9_at_random_moments_then_resume(tmp_path):
    rng = random.Random(SEED)
    run, logs = tmp_path / "R", tmp_path / "logs"
    logs.mkdir()
    resume = ["--resume", "auto", "--run-dir", str(run)]
    forker = Forker()  # imports while the first segment starts as a real train.py
    first, live, newest = None, None, 0  # newest: the newest complete checkpoint's step after the last kill
    try:
        for kill in range(KILLS):
            context = f"kill {kill + 1} of {KILLS} (seed {SEED}; SPECTRAL_GAN_KILL_SEED to repeat)"
            log = logs / f"segment{kill}.err"
            if kill == 0:  # a fresh start, as a user types it
                with open(log, "w") as err:
                    command = _train_py("--config", _config(tmp_path / "kill.yaml"), "--run-dir", run)
                    first = subprocess.Popen(command, cwd=tmp_path, env=ENV, stdout=subprocess.DEVNULL, stderr=err)
                pid, alive = first.pid, lambda p=first: p.poll() is None
            else:
                pid = forker.start(resume, tmp_path, log)
                alive = lambda p=pid: _child_alive(p)  # noqa: E731
            live = pid
            # The moment: a random number of steps on, then a random point inside the next step (a checkpoint
            # write, its rotation and the scalars flush are most of a step's time).
            _wait_beyond(run / "checkpoints", newest + rng.randint(0, 3), alive, context)
            time.sleep(rng.uniform(0.0, 0.08))
            os.kill(pid, signal.SIGKILL)
            code = first.wait() if kill == 0 else forker.wait(pid)
            live = None
            assert code == -signal.SIGKILL, f"{context}: the run ended with {code} before the kill:\n{log.read_text()}"
            if kill > 0:
                assert _resumed_from(log) == newest, f"{context}: did not resume from the newest checkpoint {newest}"
            newest = _after_kill(run, context)
        final = subprocess.run(_train_py(*resume), cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=300)
    finally:
        if live is not None:  # a check failed while a segment ran
            with contextlib.suppress(ProcessLookupError):
                os.kill(live, signal.SIGKILL)
        forker.close()
    _check_completed(run, final, newest, logs / "final.err")


def _check_completed(run: Path, final: subprocess.CompletedProcess, newest: int, log: Path) -> None:
    """The last segment resumed from the newest checkpoint and ran to the end, leaving one row per step and tag."""
    context = f"final run (seed {SEED})"
    assert final.returncode == 0, f"{context}: exit code {final.returncode}:\n{final.stderr[-3000:]}"
    log.write_text(final.stderr)
    assert _resumed_from(log) == newest, f"{context}: did not resume from step {newest}"
    folder = run / "checkpoints"
    assert max(_checkpoint_steps(folder, context).values()) == STEPS
    assert not list(folder.glob(".*.tmp")), f"{context}: temporary files left: {list(folder.glob('.*.tmp'))}"
    rows = _rows(run, context, torn_tail=False)
    _every_step_tags_once(rows, STEPS, context)
    pairs = Counter((row["step"], tag) for row in rows for tag in row if tag not in ("step", "time"))
    repeated = sorted(pair for pair, n in pairs.items() if n > 1)
    assert not repeated, f"{context}: (step, tag) rows repeated in scalars.jsonl: {repeated[:10]}"
    assert max(row["step"] for row in rows) == STEPS


def _child_alive(pid: int) -> bool:
    """Whether a forked child still runs (an exited, unreaped child is a zombie: state Z in /proc)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"
