"""Data-parallel helpers (layer 1): under ``torchrun`` every rank holds a shard of the global batch, so a
balancing statistic must be reduced across ranks before it is used. Outside a process group they are no-ops."""
import os

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if world_size() > 1 else 0


def is_main() -> bool:
    """Only rank 0 writes records and checkpoints."""
    return rank() == 0


def global_sum(x: torch.Tensor) -> torch.Tensor:
    """Sum of ``x`` over all ranks (a new tensor; differentiable inputs are detached)."""
    x = x.detach().clone()
    if world_size() > 1:
        dist.all_reduce(x, op=dist.ReduceOp.SUM)
    return x


def global_mean(x: torch.Tensor, count: torch.Tensor | float = 1.0) -> torch.Tensor:
    """sum_ranks(x * count) / sum_ranks(count): the mean over the global batch of a per-rank mean ``x``
    taken over ``count`` samples (equal to the single-process mean on the concatenated batch)."""
    if world_size() == 1:
        return x.detach()                                       # bit-identical single-process path
    count = torch.as_tensor(count, dtype=x.dtype, device=x.device)
    return global_sum(x * count) / global_sum(count)


def local_rank() -> int:
    """This process's GPU on its node (``LOCAL_RANK`` from torchrun; 0 outside it)."""
    return int(os.environ.get("LOCAL_RANK", 0))


def init_from_env() -> None:
    """Join torchrun's process group (NCCL with GPUs, else gloo) when ``WORLD_SIZE`` > 1; no-op otherwise."""
    if int(os.environ.get("WORLD_SIZE", 1)) > 1 and not dist.is_initialized():
        if torch.cuda.is_available():
            torch.cuda.set_device(local_rank())
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")


class DataParallel(DistributedDataParallel):
    """DDP whose other attributes fall through to the model (balancers read ``model.fusion``, ``model.modalities``)."""

    def __getattr__(self, name):
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name == "module":                 # not set yet (inside DDP's own __init__)
                raise
            return getattr(self.module, name)


def wrap(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """The model itself in one process; else DDP over the ranks, BatchNorm made SyncBatchNorm on CUDA (statistics of
    the global batch, as one process; gloo on CPU has no SyncBatchNorm: there BatchNorm stays per rank)."""
    if world_size() == 1:
        return model
    if device.type == "cuda":
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return DataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                        find_unused_parameters=True)
