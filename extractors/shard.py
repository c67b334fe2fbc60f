"""Which chunks of an extraction this process computes: all of them, one ``torchrun`` rank's, or one ``--shard``'s.

Each chunk of a key belongs to one of the N workers (``Shard.owns``). Chunks (the length-sorted order cut every
``extract.chunk_size`` texts) and their batching do not depend on N, so any N writes the same bytes, and a rerun
with another N resumes.
Under ``torchrun`` (``WORLD_SIZE`` > 1) the ranks meet at barriers of a ``torch.distributed`` process group
(gloo on CPU, nccl on CUDA, ``LOCAL_RANK`` picks the GPU) and rank 0 finishes each cache; independent
``--shard I/N`` jobs never wait for each other, and the last one to finish completes the cache.
"""

from __future__ import annotations

import logging
import socket
from dataclasses import dataclass
from datetime import timedelta

from benchmark.core.config import BenchConfig, torchrun_env
from benchmark.core.config_sections import parse_shard
from benchmark.core.errors import UserError

log = logging.getLogger(__name__)

# A rank waits at a barrier for the slowest rank of a split and for rank 0 to assemble the cache: longer than the
# default 10-30 minutes when the shares are uneven (a resumed run) or the cache is large (7B models).
BARRIER_TIMEOUT = timedelta(hours=12)


@dataclass(frozen=True)
class Shard:
    """This process's share of every extraction.

    Attributes:
        index: Worker index I (the ``torchrun`` rank, or I of ``--shard I/N``).
        count: Number of workers N.
        torchrun: True when the workers are ranks of one process group (barriers, rank 0 finishes).
    """

    index: int = 0
    count: int = 1
    torchrun: bool = False

    @property
    def sharded(self) -> bool:
        """True when other processes write chunks of the same caches."""
        return self.count > 1

    @property
    def worker(self) -> str:
        """Name recorded with each chunk this process writes (per-worker throughput in meta.json)."""
        if not self.sharded:
            return f"single process on {socket.gethostname()}"
        kind = "rank" if self.torchrun else "shard"
        return f"{kind} {self.index}/{self.count} on {socket.gethostname()}"

    @property
    def may_finish(self) -> bool:
        """True when this process tries to finalise: rank 0 under torchrun, every shard or lone process otherwise."""
        return not self.torchrun or self.index == 0

    def owns(self, chunk: int) -> bool:
        """True when chunk ``chunk`` is this worker's to compute.

        Chunks go out in a snake order (0, 1, .., N-1, N-1, .., 1, 0, 0, 1, ..): they are sorted longest first,
        so plain round robin would always hand worker 0 the longest chunk of every round.
        """
        position = chunk % (2 * self.count)
        return min(position, 2 * self.count - 1 - position) == self.index

    def barrier(self) -> None:
        """Wait for every rank (a no-op outside torchrun)."""
        if self.torchrun:
            import torch.distributed as dist

            dist.barrier()

    def close(self) -> None:
        """Leave the process group."""
        if self.torchrun:
            import torch.distributed as dist

            dist.destroy_process_group()


def open_shard(cfg: BenchConfig) -> Shard:
    """This process's shard: from ``torchrun``'s environment, else ``extract.shard``, else the whole extraction.

    Under torchrun with more than one process, joins the process group (and picks the GPU of ``LOCAL_RANK``).

    Raises:
        UserError: when both torchrun and ``extract.shard`` split the work.
    """
    rank, world, local_rank = torchrun_env()
    if world > 1:
        if cfg.extract.shard is not None:
            raise UserError(
                f"extract.shard={cfg.extract.shard} under torchrun (WORLD_SIZE={world}): torchrun already splits the "
                "work by rank; drop --shard"
            )
        import torch
        import torch.distributed as dist

        cuda = cfg.extract.device != "cpu" and torch.cuda.is_available()
        if cuda:
            torch.cuda.set_device(local_rank)  # "cuda" in the cache key and batching then means this rank's GPU
            gpu = torch.device("cuda", local_rank)
            dist.init_process_group("nccl", timeout=BARRIER_TIMEOUT, device_id=gpu)
        else:
            dist.init_process_group("gloo", timeout=BARRIER_TIMEOUT)
        log.info("rank %d of %d (%s)", rank, world, f"cuda:{local_rank}" if cuda else "cpu")
        return Shard(rank, world, torchrun=True)
    if cfg.extract.shard is not None:
        index, count = parse_shard(cfg.extract.shard)
        return Shard(index, count)
    return Shard()
