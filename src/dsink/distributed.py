"""The ``torch.distributed`` helpers of the whole package (one process group, launched by ``torchrun``).

A ground-floor module: it imports nothing from dsink, so the solver (:mod:`dsink.ot`) and the training
engine (:mod:`dsink.train`) share one set of helpers. The queries and collectives answer for a single
process (identity) when no process group is initialised.

``torchrun --nproc-per-node K -m dsink train ...`` starts K processes with ``RANK``, ``WORLD_SIZE`` and
``LOCAL_RANK`` set; :func:`init_from_env` joins them into one process group (NCCL on CUDA, gloo on the
CPU). Each process holds the whole training set, takes its shard of every epoch's common
permutation (``optim.batch_size`` is the global batch, split evenly) and trains DistributedDataParallel
replicas of the method's networks; only rank 0 writes the run directory (config, metrics, checkpoints,
evaluation). D-SINK's Sinkhorn step runs over the sharded training set with the class sums all-reduced.
Every entry point that joins a process group leaves it with :func:`shutdown`, on success and on error
(``dsink.cli.main`` does; :func:`init_from_env` also registers it to run at exit).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the process group (rank 0 of 1 without torch.distributed)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1


def world_size() -> int:
    """Number of processes in the initialised process group (1 without one)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def current() -> DistInfo:
    """The process group this process belongs to (single-process when none is initialised)."""
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", dist.get_rank())))
    return DistInfo()


def init_from_env(device: str = "auto") -> DistInfo:
    """Join the process group described by torchrun's environment (no-op for a single process)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 or not dist.is_available():
        return current()
    if not dist.is_initialized():
        use_cuda = torch.cuda.is_available() and not device.startswith("cpu")
        if use_cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if use_cuda else "gloo")
        import atexit

        atexit.register(shutdown)  # a safety net for library callers; the CLI tears it down itself
    return current()


def shutdown() -> None:
    """Tear down the process group, if one is initialised (every entry point that joins one calls this, on
    success and on error: a process that exits with a live group can abort at exit)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


class PeerLost(RuntimeError):
    """A collective failed because another process of the group died (killed, crashed, out of memory)."""


# what gloo and NCCL say when the process at the other end of a collective is gone
_PEER_GONE = ("connection closed by peer", "connection reset by peer", "broken pipe", "connection refused",
              "nccl communicator was aborted", "remote process exited", "socket closed", "timed out")


def peer_lost(e: BaseException) -> bool:
    """``e`` is a collective's failure because a peer process died (only inside an active process group)."""
    if not current().active or not isinstance(e, RuntimeError):
        return False
    backend_error = getattr(dist, "DistBackendError", ())
    text = str(e).lower()
    return (backend_error and isinstance(e, backend_error)) or any(s in text for s in _PEER_GONE) or "gloo" in text


def barrier() -> None:
    if current().active:
        dist.barrier()


def all_ok(ok: bool) -> bool:
    """True when every process reports ``ok`` (used to stop all ranks together on an error)."""
    if not current().active:
        return ok
    t = torch.tensor([0.0 if ok else 1.0])
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t)
    return float(t) == 0.0


def row_block(n: int, info: DistInfo) -> tuple[int, int]:
    """Contiguous rows ``[lo, hi)`` of an N-row array owned by this process."""
    per = -(-n // info.world)
    lo = min(n, info.rank * per)
    return lo, min(n, lo + per)


def all_gather_rows(local: torch.Tensor, n: int) -> torch.Tensor:
    """Concatenate every process's :func:`row_block` of an (N, ...) array, in rank order."""
    info = current()
    if not info.active:
        return local
    per = -(-n // info.world)
    buf = torch.zeros((per,) + tuple(local.shape[1:]), dtype=local.dtype, device=local.device)
    buf[: len(local)] = local
    parts = [torch.empty_like(buf) for _ in range(info.world)]
    dist.all_gather(parts, buf)
    return torch.cat(parts)[:n]


def all_reduce(t: torch.Tensor, op: str = "sum") -> torch.Tensor:
    """In-place ``"sum"`` or ``"max"`` over processes, returning ``t`` (identity for a single process)."""
    if op not in ("sum", "max"):
        raise ValueError(f"all_reduce op must be 'sum' or 'max', got {op!r}")
    if world_size() > 1:
        dist.all_reduce(t, op=dist.ReduceOp.SUM if op == "sum" else dist.ReduceOp.MAX)
    return t


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """In-place sum over processes (identity for a single process)."""
    return all_reduce(t, "sum")
