"""Multi-process training (gan.distributed, torchrun): batch shards, the rank-consistency check, and train.py under
``torchrun --nproc_per_node 2`` on the CPU (gloo) against a single process with the same global batch."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from gan import distributed
from gan.checkpoint import load_checkpoint
from gan.cli import train_main
from gan.errors import ConfigError
from gan.spectral import spectral_norm
from gan.trainer import StepBatchSampler
from tests.closeness import assert_trained_alike

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("flip", [False, True])
@pytest.mark.parametrize("world", [2, 4])
def test_shards_of_every_step_make_up_the_single_process_batch(flip, world):
    def keys(rank, size):
        return StepBatchSampler(37, 8, seed=5, start_step=0, total_steps=20, flip=flip, rank=rank, world=size)

    for step in range(20):  # crosses epoch boundaries (4 batches per epoch)
        shards = [keys(rank, world).keys_at(step) for rank in range(world)]
        assert all(len(shard) == 8 // world for shard in shards)
        assert sum(shards, []) == keys(0, 1).keys_at(step)


def test_global_batch_must_divide_among_the_processes():
    distributed.check_batch(8, 4)
    with pytest.raises(ConfigError, match="train.batch_size: 6 is the global batch .* 4 processes"):
        distributed.check_batch(6, 4)


def test_helpers_are_no_ops_in_one_process():
    x = torch.arange(3.0)
    assert distributed.world_size() == 1 and distributed.is_main() and not distributed.active()
    assert distributed.gather(x) is x and distributed.agree(2, x.device) == 2 and distributed.broadcast("a") == "a"
    values = {"a": torch.tensor(1.0)}
    assert distributed.average(values) is values
    module = nn.Linear(2, 2)
    assert distributed.wrap(module, torch.device("cpu"), broadcast_buffers=False) is module


def test_a_sweep_under_torchrun_is_refused(monkeypatch, capsys):
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert train_main(["--sweep", "configs/sweeps/example.yaml"]) == 2
    assert capsys.readouterr().err.strip() == (
        "error: --sweep under torchrun: a sweep starts its own runs; launch each run with torchrun instead"
    )


def _consistency_worker(rank: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        torch.manual_seed(0)
        net = nn.Sequential(spectral_norm(nn.Conv2d(3, 4, 3)), nn.BatchNorm2d(4))
        distributed.check_consistency({"D": net})  # identical on both ranks: passes
        gathered = distributed.gather(torch.tensor([float(rank)]))
        averaged = distributed.average({"loss": torch.tensor(float(rank))})["loss"]
        results = {
            "gather": gathered.tolist(),
            "average": float(averaged),
            "agree": distributed.agree(rank, net[0].weight_u.device),
        }
        if rank == 1:
            with torch.no_grad():
                net[0].weight_u[0] += 1e-7  # one ulp-sized change of spectral norm's u on one rank
        try:
            distributed.check_consistency({"D": net})
            results["error"] = None
        except RuntimeError as exc:
            results["error"] = str(exc)
        Path(out_dir, f"{rank}.json").write_text(json.dumps(results))
    finally:
        dist.destroy_process_group()


def test_consistency_check_names_the_first_tensor_that_differs_between_ranks(tmp_path):
    mp.spawn(_consistency_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    for rank in range(2):
        results = json.loads((tmp_path / f"{rank}.json").read_text())
        assert results["gather"] == [0.0, 1.0] and results["average"] == 0.5 and results["agree"] == 1
        assert results["error"] == f"DDP consistency: D.0.weight_u differs between ranks (rank {rank})"


# ------------------------------------------------------------------------------------------- train.py under torchrun
SETTINGS = ["--set", "hooks.checkpoint.every=1", "--set", "hooks.checkpoint.keep=10"]


def _train(cwd: Path, run: str, processes: int, *args: str, expect: int = 0) -> subprocess.CompletedProcess:
    """train.py in ``processes`` processes (torchrun, gloo) or one (plain python), one thread each."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    launcher = [sys.executable]
    if processes > 1:
        launcher += ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
    command = [*launcher, str(REPO / "train.py"), "--config", "tiny.yaml", "--run-dir", run, *SETTINGS, *args]
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == expect, done.stderr[-12000:]
    return done


def _assert_same_training(path: Path, reference: Path) -> None:
    assert_trained_alike(load_checkpoint(path), load_checkpoint(reference))


def _scalars(run: Path) -> list[tuple[str, int]]:
    rows = [json.loads(line) for line in (run / "scalars.jsonl").read_text().splitlines()]
    return [(tag, row["step"]) for row in rows for tag in row if tag not in ("step", "time")]


@pytest.mark.slow
def test_two_gloo_processes_train_like_one_process_with_the_same_global_batch(tiny_config, tmp_path):
    (tmp_path / "tiny.yaml").write_text(tiny_config.read_text())
    done = _train(tmp_path, "ddp", 2)  # checkpoints every step: every rank checks it holds the same weights
    _train(tmp_path, "single", 1)
    ddp, single = tmp_path / "ddp", tmp_path / "single"
    assert done.stderr.count("finished at step 6") == 1  # one summary: rank 0 speaks for the run
    for step in range(1, 7):
        _assert_same_training(ddp / f"checkpoints/step_{step:08d}.pt", single / f"checkpoints/step_{step:08d}.pt")
    assert len([p for p in ddp.glob("events.out.tfevents.*") if not p.name.endswith(".hparams")]) == 1  # one event file
    assert sorted(_scalars(ddp)) == sorted(_scalars(single))  # one scalars.jsonl, one row per tag and step
    assert json.loads((ddp / "status.json").read_text())["status"] == "completed"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ddp", "single", "tiny.yaml"]  # nothing else written

    # A resume with another world size continues the same run: 2 -> 1 and 1 -> 2 processes from step 3.
    for source, processes in (("ddp", 1), ("single", 2)):
        resumed = tmp_path / f"from_{source}"
        (resumed / "checkpoints").mkdir(parents=True)
        (resumed / "checkpoints/step_00000003.pt").write_bytes(
            (tmp_path / source / "checkpoints/step_00000003.pt").read_bytes()
        )
        _train(tmp_path, resumed.name, processes, "--resume", "auto")
        _assert_same_training(resumed / "checkpoints/last.pt", single / "checkpoints/last.pt")


@pytest.mark.slow
def test_r1_and_batch_norm_with_sync_under_two_processes(tiny_config, tmp_path):
    """R1 (double backward of the real forward), SyncBN-style statistics in G (model.sync_batchnorm) and EMA."""
    (tmp_path / "tiny.yaml").write_text(tiny_config.read_text())
    extra = ["--set", "loss.lambda_gp=0", "--set", "loss.lambda_r1=1", "--set", "model.generator.norm=batch"]
    extra += ["--set", "model.sync_batchnorm=true", "--set", "train.g_ema_decay=0.9"]
    _train(tmp_path, "ddp", 2, *extra)
    _train(tmp_path, "single", 1, *extra)
    for step in (3, 6):
        name = f"checkpoints/step_{step:08d}.pt"
        _assert_same_training(tmp_path / "ddp" / name, tmp_path / "single" / name)


@pytest.mark.slow
def test_a_divergence_on_rank_0_stops_every_rank(tiny_config, tmp_path):
    """Only rank 0 runs the hooks; when one declares a divergence, rank 1 stops at the same step instead of waiting
    for rank 0 in the next collective."""
    (tmp_path / "tiny.yaml").write_text(tiny_config.read_text())
    limit = ["--set", "hooks.stability.every=2", "--set", "hooks.stability.grad_norm_limit=1e-6"]
    done = _train(tmp_path, "run", 2, *limit, expect=1)  # torchrun's own code for a failed worker
    assert "error: diverged at step 0" in done.stderr
    assert "error: rank 1: another process failed at step 0 (see rank 0)" in done.stderr
    assert json.loads((tmp_path / "run" / "status.json").read_text())["status"] == "diverged"


@pytest.mark.slow
@pytest.mark.parametrize(
    "args, needle",
    [
        (["--set", "train.batch_size=0"], "train.batch_size"),  # refused by every rank before the group forms
        (["--resume", "nowhere.pt"], "nowhere.pt"),  # found by rank 0, shared with the others
    ],
)
def test_bad_input_under_torchrun_is_said_once(tiny_config, tmp_path, args, needle):
    (tmp_path / "tiny.yaml").write_text(tiny_config.read_text())
    done = _train(tmp_path, "run", 2, *args, expect=1)  # torchrun's own code for a failed worker
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and needle in errors[0], done.stderr[-3000:]
    assert str(REPO / "gan") not in done.stderr  # no traceback of ours (torchrun prints its own ChildFailedError)
