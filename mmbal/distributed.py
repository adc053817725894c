"""Data-parallel helpers (layer 1): under ``torchrun`` every rank holds a shard of the global batch, so a
balancing statistic must be reduced across ranks before it is used. Outside a process group they are no-ops."""
import torch
import torch.distributed as dist


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
