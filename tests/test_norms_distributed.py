"""Synchronised batch statistics across two CPU processes (gloo): the synced layer on each rank's part of a batch
must equal the plain layer on the whole batch (outputs, running statistics, input and parameter gradients, and the
second-order gradients that GP/R1 need), in float64."""

import copy
import datetime

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from gan.norms import make_norm, set_norm_step, set_sync_batch_stats

WORLD = 2
CASES = [
    ("batch", {}),
    ("batch", {"track_running_stats": False}),
    ("batch", {"momentum": None}),
    ("batch_renorm", {}),
    ("switchable", {}),
    ("batch_instance", {}),
]
SPLITS = [(3, 3), (2, 4)]  # unequal parts: each rank's samples must count by number, not by rank


def _data(seed, shape):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64) * 2 + 0.5


def _layer(name, options):
    layer = make_norm(name, 3, **options).double()
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for param in layer.parameters():
            param.add_(torch.rand(param.shape, generator=g, dtype=torch.float64) * 0.6 - 0.3)
        for key, buf in layer.named_buffers():
            if key in ("running_mean", "running_std", "running_var"):
                buf.add_(torch.rand(buf.shape, generator=g, dtype=torch.float64) * 0.5)
    set_norm_step(layer, 30000)  # Batch Renorm with r, d clipped on some channels and not on others
    return layer


def _assert_params_and_buffers(layer, ref, what):
    for (key, param), ref_param in zip(layer.named_parameters(), ref.parameters()):
        # None where the loss does not reach the parameter (beta under a gradient penalty): compare as zeros
        grad = torch.zeros_like(param) if param.grad is None else param.grad.clone()
        dist.all_reduce(grad)  # DDP would sum (or average) the ranks' parameter gradients
        expected = torch.zeros_like(param) if ref_param.grad is None else ref_param.grad
        torch.testing.assert_close(grad, expected, atol=1e-10, rtol=0, msg=f"{what}: grad of {key}")
    for (key, buf), ref_buf in zip(layer.named_buffers(), ref.buffers()):
        torch.testing.assert_close(buf, ref_buf, atol=1e-10, rtol=0, msg=f"{what}: buffer {key}")


def _check_case(rank, device, name, options, split, second_order):
    what = f"rank {rank}, {name} {options}, split {split}, second order {second_order}"
    ref = _layer(name, options).to(device)
    layer = copy.deepcopy(ref)
    assert set_sync_batch_stats(layer, True) == 1
    shape = (sum(split), 3, 4, 5)
    x_full, upstream = _data(1, shape).to(device), _data(2, shape).to(device)
    lo, hi = sum(split[:rank]), sum(split[: rank + 1])
    outputs = []
    for module, x, up in ((ref, x_full, upstream), (layer, x_full[lo:hi], upstream[lo:hi])):
        x = x.clone().requires_grad_(True)
        out = module(x)
        loss = (out * up).sum()
        if second_order:  # a gradient penalty: differentiate the input gradient again
            (grad,) = torch.autograd.grad(loss, x, create_graph=True)
            loss = grad.pow(2).sum()
        loss.backward()
        outputs.append((out.detach(), x.grad))
    (ref_out, ref_grad), (out, grad) = outputs
    torch.testing.assert_close(out, ref_out[lo:hi], atol=1e-10, rtol=0, msg=f"{what}: output")
    torch.testing.assert_close(grad, ref_grad[lo:hi], atol=1e-10, rtol=0, msg=f"{what}: input grad")
    _assert_params_and_buffers(layer, ref, what)
    ref.eval()
    layer.eval()  # eval never syncs (as nn.SyncBatchNorm): running statistics, or the rank's own batch without them
    expected = ref(x_full[lo:hi]) if options.get("track_running_stats") is False else ref(x_full)[lo:hi]
    torch.testing.assert_close(layer(x_full[lo:hi]), expected, atol=1e-10, rtol=0, msg=f"{what}: eval")


def _worker(rank, init_file, device):
    dist.init_process_group(
        "gloo",
        init_method=f"file://{init_file}",
        rank=rank,
        world_size=WORLD,
        timeout=datetime.timedelta(seconds=60),
    )
    try:
        torch.set_num_threads(1)
        if device == "cuda":
            torch.cuda.set_device(0)  # both ranks share the one GPU; gloo reduces CUDA tensors through the host
        for name, options in CASES:
            for split in SPLITS:
                for second_order in (False, True):
                    _check_case(rank, device, name, options, split, second_order)
    finally:
        dist.destroy_process_group()


CUDA = pytest.param(
    "cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]
)


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs torch.distributed gloo")
@pytest.mark.parametrize("device", ["cpu", CUDA])
def test_synced_layers_on_two_processes_equal_the_plain_layer_on_the_whole_batch(tmp_path, device):
    # spawn raises here with the failing rank's traceback, and kills the other rank rather than leaving it hanging
    mp.spawn(_worker, args=(str(tmp_path / "rendezvous"), device), nprocs=WORLD, join=True)
