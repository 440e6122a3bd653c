"""Where a sweep's cells run: this process, or tasks on a ``concurrent.futures`` executor.

:func:`specdyn.sweep` runs every cell in this process by default. Given an
``executor`` (any ``concurrent.futures.Executor``: a Dask ``Client.get_executor()``,
a ``ProcessPoolExecutor`` with a ``spawn`` context, mpi4py's ``MPIPoolExecutor``) or a Dask
``client`` (a ``distributed.Client`` or a scheduler address such as
``"tcp://host:8786"``), it submits one task per unit of work (a cell, or the cells
that share a bucket's program); each task computes its cells with the same programs
and writes them atomically into the sweep's store, and the caller assembles the
Dataset from the store as it would in-process. Dask reschedules the task of a worker
that died on another worker; cells already in the store are never recomputed.

:func:`local_cluster` starts a Dask cluster of worker processes on this machine (the
command line's ``--workers N``). Dask (``distributed``) is imported only when used.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
from collections.abc import Callable, Iterator, Sequence

__all__ = ["check", "connected", "local_cluster", "resolve", "run_tasks"]

_CONNECT_SECONDS = 10


def _is_client(value) -> bool:
    try:
        from distributed import Client
    except ImportError:  # without Dask nothing can be a Client
        return False
    return isinstance(value, Client)


def check(executor, client) -> None:
    """ValueError naming the argument unless ``executor`` is None or a
    ``concurrent.futures.Executor`` and ``client`` is None, a ``distributed.Client`` or
    a scheduler address (a string), not both given."""
    if executor is not None and client is not None:
        raise ValueError(f"give executor= or client=, not both; got {executor=!r} and {client=!r}")
    if executor is not None and not isinstance(executor, concurrent.futures.Executor):
        raise ValueError(
            f"executor must be a concurrent.futures.Executor (a Dask Client's get_executor(), a "
            f"ProcessPoolExecutor, ...), got executor={executor!r}; a Dask Client goes in client="
        )
    if client is None or _is_client(client):
        return
    if not isinstance(client, str) or not client.strip():
        raise ValueError(
            f"client must be a distributed.Client or a Dask scheduler address such as "
            f"'tcp://host:8786', got client={client!r}"
        )
    try:
        import distributed  # noqa: F401
    except ImportError:
        raise ValueError(
            f"client={client!r} needs Dask: pip install 'dask[distributed]' (or specdyn[distributed])"
        ) from None


@contextlib.contextmanager
def resolve(executor, client) -> Iterator[concurrent.futures.Executor]:
    """The executor to submit to (see :func:`check`); a client made here from an address
    is closed on exit. An address no scheduler answers at raises ValueError naming it."""
    check(executor, client)
    if executor is not None:
        yield executor
        return
    if _is_client(client):
        yield client.get_executor()
        return
    with connected(client) as dask_client:
        yield dask_client.get_executor()


@contextlib.contextmanager
def connected(address: str, *, label: str | None = None):
    """A ``distributed.Client`` connected to the Dask scheduler at ``address``, closed on
    exit; ValueError naming it (``label``, default ``client=...``) when no scheduler
    answers there within a few seconds."""
    from distributed import Client
    from distributed.comm import get_address_host_port, parse_address

    label = label or f"client={address!r}"
    try:
        scheme, _ = parse_address(address, strict=True)
        if scheme in ("tcp", "tls") and not get_address_host_port(address)[0]:
            raise ValueError("no host")
    except (ValueError, TypeError) as err:
        raise ValueError(f"{label} is not a Dask scheduler address such as tcp://host:8786 ({err})") from None
    try:
        client = Client(address, timeout=_CONNECT_SECONDS, set_as_default=False)
    except (OSError, TimeoutError, ValueError, TypeError) as err:
        reason = " ".join(str(err).split()) or type(err).__name__
        raise ValueError(
            f"{label}: no Dask scheduler answers there within {_CONNECT_SECONDS} s ({reason})"
        ) from None
    try:
        yield client
    finally:
        client.close()


def run_tasks(executor: concurrent.futures.Executor, tasks: Sequence[Callable[[], object]],
              on_result: Callable[[int, object], None]) -> None:
    """Submit every task and call ``on_result(k, result)`` as task ``k`` finishes, in the
    order they finish. The first task that fails (or an interrupt) cancels those not yet
    finished and raises its error: cells already written stay in the store."""
    futures = {executor.submit(task): k for k, task in enumerate(tasks)}
    try:
        for future in concurrent.futures.as_completed(futures):
            on_result(futures[future], future.result())
    except BaseException:
        for future in futures:
            future.cancel()
        raise


@contextlib.contextmanager
def local_cluster(workers: int):
    """A ``distributed.Client`` of a Dask cluster of ``workers`` processes on this machine
    (one thread each, no dashboard), closed on exit. Worker processes start by ``spawn``
    and inherit this process's environment (``XLA_FLAGS``, ``JAX_COMPILATION_CACHE_DIR``, ...)."""
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a positive int, got workers={workers!r}")
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        with Client(cluster, set_as_default=False) as client:
            yield client
