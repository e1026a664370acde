"""One run over several processes (torchrun): the process group, rank helpers, DDP wrapping and the checks and
collectives the trainer needs. With a single process every helper is a cheap no-op, so the same code runs both ways.

``torchrun --nproc_per_node N train.py ...`` starts N copies of ``train.py`` with ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` in their environment; :func:`init` joins them into one process
group (gloo on the CPU, NCCL on CUDA). Rank 0 owns the run folder: it writes the config, TensorBoard, the progress
bar, evaluations and checkpoints; the other ranks train their shard of every batch and write nothing.
"""

from __future__ import annotations

import datetime
import gc
import inspect
import os
import warnings
from collections.abc import Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from gan.errors import ConfigError

# Rank 0 alone runs the evaluations (a step-0 FID, a classifier to train) while the others wait in the next
# collective; gloo's and NCCL's default of 30 minutes would cut a long evaluation off.
TIMEOUT = datetime.timedelta(hours=2)


def launched() -> bool:
    """Whether this process was started by torchrun (or another launcher that sets the env:// variables)."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def active() -> bool:
    """Whether a process group with more than one process is running."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    return rank() == 0


def init(device: torch.device) -> torch.device:
    """Join torchrun's process group (once per process) and return the device this rank trains on.

    CPU runs use gloo; CUDA runs use NCCL with one GPU per process (``LOCAL_RANK``). Without torchrun's variables
    this does nothing and returns ``device``.
    """
    if not launched() or (dist.is_available() and dist.is_initialized()):
        return _local_device(device)
    if not dist.is_available():
        raise ConfigError("torchrun: this build of PyTorch has no torch.distributed")
    device = _local_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend, timeout=TIMEOUT)
    return device


def _local_device(device: torch.device) -> torch.device:
    if device.type != "cuda" or not launched():
        return device
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if local >= torch.cuda.device_count():
        raise ConfigError(
            f"torchrun: local rank {local} has no GPU ({torch.cuda.device_count()} visible); start at most that many "
            "processes per node"
        )
    return torch.device("cuda", local)


def shutdown(wait: bool = False) -> None:
    """Leave the process group. ``wait``: first wait until every rank is done (after a run that ended normally, so
    that no rank closes its connections while rank 0 still saves and evaluates). Garbage is collected first: DDP
    wrappers sit in reference cycles and keep the group and its worker threads alive, and freeing those only while
    the interpreter shuts down can abort the process (SIGABRT, "terminate called without an active exception")."""
    if not (dist.is_available() and dist.is_initialized()):
        return
    if wait and active():
        dist.barrier()
    gc.collect()
    dist.destroy_process_group()


def shard(items: Sequence[Any], rank_: int, world: int) -> list[Any]:
    """This rank's equal, contiguous part of a global batch (the caller checked that the sizes divide)."""
    size = len(items) // world
    return list(items[rank_ * size : (rank_ + 1) * size])


def check_batch(batch_size: int, world: int) -> None:
    if batch_size % world:
        raise ConfigError(
            f"train.batch_size: {batch_size} is the global batch and must divide evenly among the {world} processes"
        )


def wrap(module: nn.Module, device: torch.device, broadcast_buffers: bool) -> nn.Module:
    """``module`` in DistributedDataParallel (it all-reduces the gradients in its backward), or ``module`` itself
    with one process. ``broadcast_buffers``: copy rank 0's buffers to every rank at each forward, needed only when
    the module keeps per-rank statistics (batch norm without ``model.sync_batchnorm``); spectral norm's u, v stay
    identical without it (they advance from identical weights)."""
    if not active():
        return module
    ids = [device.index] if device.type == "cuda" else None
    # torch 2.14 renamed broadcast_buffers (the old name warns); both sync every buffer once at construction.
    renamed = "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
    sync = {"forward_sync_buffers" if renamed else "broadcast_buffers": broadcast_buffers}
    # A weight with a dimension of size 1 (D's one-channel output conv) gets its gradient through spectral norm's
    # division with another, equally valid stride on that dimension than the bucket's view; DDP copies it and warns
    # "Grad strides do not match bucket view strides" once per process. The copy is of a few floats: not worth it.
    warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
    return DistributedDataParallel(module, device_ids=ids, **sync)


def gather(tensor: torch.Tensor) -> torch.Tensor:
    """Every rank's ``tensor`` (same shape everywhere) concatenated along dim 0 in rank order."""
    if not active():
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(world_size())]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts)


def average(values: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The mean over ranks of a dict of scalar tensors, in one collective (losses for logging and the NaN guard)."""
    if not active() or not values:
        return values
    stacked = torch.stack([v.detach().float().reshape(()) for v in values.values()])
    dist.all_reduce(stacked)
    stacked /= world_size()
    return dict(zip(values, stacked.unbind()))


def agree(code: int, device: torch.device) -> int:
    """The largest ``code`` over all ranks (0: go on; larger: stop, and why), so that every rank stops together."""
    if not active():
        return code
    flag = torch.tensor([code], dtype=torch.int64, device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return int(flag.item())


def broadcast(obj: Any) -> Any:
    """Rank 0's ``obj`` (picklable) on every rank."""
    if not active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def check_consistency(modules: dict[str, nn.Module]) -> None:
    """Raise RuntimeError naming the first parameter or buffer that is not bitwise equal to rank 0's on every rank.

    As StyleGAN2-ADA's ``check_ddp_consistency``: each tensor is broadcast from rank 0 and compared exactly (NaN
    equal to NaN). Spectral norm's u, v are buffers, so this also checks that they stayed in step.
    """
    if not active():
        return
    for network, module in modules.items():
        for name, tensor in [*module.named_parameters(), *module.named_buffers()]:
            mine = tensor.detach()
            theirs = mine.clone()
            dist.broadcast(theirs, src=0)
            same = torch.equal(mine.nan_to_num(), theirs.nan_to_num()) and torch.equal(mine.isnan(), theirs.isnan())
            ok = agree(int(not same), mine.device) == 0
            if not ok:
                raise RuntimeError(f"DDP consistency: {network}.{name} differs between ranks (rank {rank()})")
