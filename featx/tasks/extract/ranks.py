"""The ranks of a ``torchrun`` extraction working as one: torchrun's environment read and checked, the process group
started (or one the caller started taken as it is), rank 0's listing sent to all and its lock on the output folder,
each step's failure on any rank raised on every rank (none waits for a rank that stopped), and every rank's
settings held equal (features of one network only). Example::

    rank, world, started = start_distributed(torch.device("cpu"))    # (0, 1, False) outside torchrun
    listing = listing_of_rank_zero("photos/", "feats/", rank, world)
    check_same_settings({"weights": "..."}, world)
    with ranks_fail_together(world):
        ...                                                          # a step every rank runs
"""

from __future__ import annotations

import contextlib
import os
import re
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Iterator, List, Optional, Tuple

import torch
import torch.distributed as dist

from featx.errors import ArgumentError, FeatxError
from featx.spec.limits import quoted
from featx.tasks.extract.listing import ImageListing, find_images
from featx.tasks.extract.store import FeatureStore, setting_differences

#: what torchrun sets for each rank (besides WORLD_SIZE, RANK and LOCAL_RANK): where rank 0 waits for the others
_RENDEZVOUS_VARIABLES = ("MASTER_ADDR", "MASTER_PORT")
_TORCHRUN_HINT = "torchrun sets it for each process it starts; unset it to extract in one process"
#: an integer as torchrun writes one: ASCII digits (int() also takes "1_0" and other scripts' digits), a minus sign
_INTEGER = re.compile(r"\s*-?[0-9]+\s*", re.ASCII)
#: the ports rank 0 can wait on for the others (torch also takes 0, "any free port", which no other rank can know)
_PORTS = range(1, 65536)


def _integer(text: str) -> int:
    """``text`` as an integer written as :data:`_INTEGER` says; ValueError otherwise."""
    if not _INTEGER.fullmatch(text):
        raise ValueError(text)
    return int(text)


def _whole_number(variable: str, default: int, least: int) -> int:
    text = os.environ.get(variable)
    if text is None:
        return default
    try:
        value = _integer(text)
    except ValueError:
        raise ArgumentError(f"{variable}: {quoted(text)} is not a whole number ({_TORCHRUN_HINT})") from None
    if value < least:
        raise ArgumentError(f"{variable}: {value} is below {least} ({_TORCHRUN_HINT})")
    return value


def torchrun_environment() -> Tuple[int, int]:
    """(world size, rank) from torchrun's ``WORLD_SIZE`` and ``RANK`` ((1, 0) without ``WORLD_SIZE``), checked
    wherever ``WORLD_SIZE`` is set, ``WORLD_SIZE=1`` included: whole numbers in ASCII digits, ``0 <= RANK <
    WORLD_SIZE`` (``RANK`` may be left out for one process), ``LOCAL_RANK`` not negative; :class:`ArgumentError`
    naming the variable otherwise (torch answers with a raw error from deep inside, or waits for ranks that never
    come)."""
    if os.environ.get("WORLD_SIZE") is None:
        return 1, 0
    world = _whole_number("WORLD_SIZE", 1, 1)
    rank = _whole_number("RANK", 0 if world == 1 else -1, 0)
    if rank == -1:
        raise ArgumentError(f"RANK: not set, with WORLD_SIZE={world} ({_TORCHRUN_HINT})")
    if rank >= world:
        raise ArgumentError(f"RANK: {rank} is not below WORLD_SIZE={world} (ranks are 0 to {world - 1})")
    _whole_number("LOCAL_RANK", 0, 0)
    return world, rank


def local_rank() -> int:
    """This process's GPU index on its node: torchrun's ``LOCAL_RANK`` (0 when unset)."""
    return _whole_number("LOCAL_RANK", 0, 0)


def start_distributed(device: torch.device) -> Tuple[int, int, bool]:
    """(rank, world size, whether this call started the process group): a process group the caller started is
    taken as it is; else torchrun's environment (``MASTER_PORT`` a port from 1 to 65535) starts one (NCCL on CUDA,
    else gloo) when it has several ranks."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), False
    world, rank = torchrun_environment()
    if world == 1:
        return 0, 1, False
    missing = [variable for variable in _RENDEZVOUS_VARIABLES if not os.environ.get(variable)]
    if missing:
        raise ArgumentError(
            f"{', '.join(missing)}: not set, with WORLD_SIZE={world}: run under torchrun (it sets WORLD_SIZE, RANK, "
            f"{', '.join(_RENDEZVOUS_VARIABLES)}), or unset WORLD_SIZE to extract in one process"
        )
    _check_master_port(os.environ["MASTER_PORT"])
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=rank, world_size=world)
    return dist.get_rank(), world, True


def _check_master_port(text: str) -> None:
    """ArgumentError unless ``text`` (``MASTER_PORT``) is a port of :data:`_PORTS` (torch answers another with a
    ValueError that does not name the variable, and port 0 leaves the other ranks waiting)."""
    try:
        port = _integer(text)
    except ValueError:
        port = None
    if port not in _PORTS:
        raise ArgumentError(
            f"MASTER_PORT: {quoted(text) if port is None else port} is not a port: a whole number from "
            f"{_PORTS[0]} to {_PORTS[-1]} (torchrun sets it from --master_port; unset WORLD_SIZE to extract in one "
            "process)"
        )


@contextlib.contextmanager
def ranks_fail_together(world: int) -> Iterator[None]:
    """Run the block on every rank, then learn whether it failed on any: this rank's own error is raised as it is,
    another rank's as a featx error naming that rank (:class:`ArgumentError` for one, else :class:`FeatxError`),
    so every rank stops together instead of waiting in a later collective for a rank that stopped."""
    if world == 1:
        yield
        return
    failure: Optional[Exception] = None
    try:
        yield
    except Exception as error:  # noqa: BLE001 - raised below, after the other ranks are told
        failure = error
    told = None if failure is None else (isinstance(failure, ArgumentError), str(failure) or type(failure).__name__)
    reports: List[Optional[Tuple[bool, str]]] = [None] * world
    try:
        dist.all_gather_object(reports, told)
    except Exception:  # another rank went away: this rank's own error says more
        if failure is not None:
            raise failure from None
        raise
    if failure is not None:
        raise failure
    for other, report in enumerate(reports):
        if report is not None:
            argument_error, message = report
            raise (ArgumentError if argument_error else FeatxError)(f"rank {other}: {message}")


def check_same_settings(settings: Any, world: int) -> None:
    """Refuse (on every rank) a run whose ranks would store features of different networks: ``settings`` (what the
    features depend on, weights files by content) differ between rank 0 and another (each node with its own copy of
    a weights file, or of the hub cache, that holds other weights)."""
    if world == 1:
        return
    gathered: List[Any] = [None] * world
    dist.all_gather_object(gathered, settings)
    for other in range(1, world):
        differing = setting_differences(gathered[0], gathered[other])
        if differing:
            raise ArgumentError(
                f"the ranks would store features of different networks: rank {other}'s settings differ from rank "
                f"0's (differing: {', '.join(differing[:6])}); give every rank the same spec, weights (a weights "
                "file of the same content on each node) and transform"
            )


def listing_of_rank_zero(source: str, output: str, rank: int, world: int) -> ImageListing:
    """Rank 0 lists the input (leaving out the output folder) and sends the listing to the others, so every rank
    splits the same list; a listing that fails stops every rank."""
    listing: List[Optional[ImageListing]] = [None]
    with ranks_fail_together(world):
        if rank == 0:
            listing = [find_images(source, exclude=Path(output))]
    if world > 1:
        dist.broadcast_object_list(listing, src=0)
    assert listing[0] is not None
    return listing[0]


def output_lock(store: FeatureStore, rank: int, world: int) -> ExitStack:
    """Rank 0 takes the output folder's lock for the run (the returned stack holds it; close it to release).
    Whatever stops rank 0 from taking it (another run holds it, the folder cannot be created) stops every rank."""
    stack = ExitStack()
    try:
        with ranks_fail_together(world):
            if rank == 0:
                stack.enter_context(store.exclusive())
    except BaseException:
        stack.close()
        raise
    return stack


def total_over_ranks(count: int, world: int, device: torch.device) -> int:
    """``count`` summed over the ranks (also a barrier: every rank has written its shards when it returns)."""
    if world == 1:
        return count
    total = torch.tensor([count], device=device)
    dist.all_reduce(total)
    return int(total.item())
