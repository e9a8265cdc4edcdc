"""Multi-host start-up: ``jax.distributed.initialize`` from the cluster's environment or from flags.

Must run before anything touches a JAX backend (``jax.devices()``, an array, a compile).

- ``mode: explicit`` (or the ``--coordinator/--num-processes/--process-id`` flags of ``icrl train``):
  exactly those values.
- ``mode: auto``: a SLURM job step with several tasks (``srun``), an Open MPI launch with several
  ranks, or a Cloud TPU VM with libtpu: ``jax.distributed.initialize()`` without arguments, which
  reads the coordinator, process count and id from that environment; otherwise one process.
- ``mode: off``: one process, whatever the environment says.

On CPU, cross-process collectives go through gloo (or MPI), set before the backend starts.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os

from icrl.errors import IcrlError
from icrl.train.config import DistributedConfig


@dataclasses.dataclass(frozen=True)
class ProcessInfo:
    """Where this process stands: how it joined (``"single"``, ``"explicit"``, ``"slurm"``, ...)."""

    how: str
    process_index: int
    process_count: int


def detect_cluster(env: dict[str, str] | None = None) -> str | None:
    """The multi-process launcher this process runs under, or None.

    Only launches with more than one process count: a one-task SLURM job runs as a single process.
    """
    env = os.environ if env is None else env
    slurm = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID", "SLURM_LOCALID")
    if all(k in env for k in slurm) and _int(env["SLURM_NTASKS"]) > 1:
        return "slurm"
    if _int(env.get("OMPI_COMM_WORLD_SIZE", "1")) > 1:
        return "ompi"
    if env.get("TPU_WORKER_HOSTNAMES") and len(env["TPU_WORKER_HOSTNAMES"].split(",")) > 1:
        return "tpu"
    if env.get("MEGASCALE_COORDINATOR_ADDRESS"):
        return "tpu"
    if importlib.util.find_spec("libtpu") is not None and not env.get("TPU_SKIP_MDS_QUERY"):
        return "tpu?"  # a Cloud TPU VM: jax asks the metadata server whether it is part of a pod
    return None


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        return 1


def initialize(cfg: DistributedConfig) -> ProcessInfo:
    """Join the multi-process run ``cfg`` describes (or stay single); return this process's place."""
    import jax

    if cfg.mode == "off":
        return ProcessInfo("single", 0, 1)
    explicit = cfg.mode == "explicit" or cfg.coordinator_address is not None
    cluster = None if explicit else detect_cluster()
    if not explicit and cluster is None:
        return ProcessInfo("single", 0, 1)
    if jax.distributed.is_initialized():
        return ProcessInfo("existing", jax.process_index(), jax.process_count())
    jax.config.update("jax_cpu_collectives_implementation", cfg.cpu_collectives)
    kwargs = dict(initialization_timeout=cfg.initialization_timeout, local_device_ids=cfg.local_device_ids)
    try:
        if explicit:
            if None in (cfg.num_processes, cfg.process_id):
                raise IcrlError("distributed: a coordinator address needs num_processes and process_id "
                                "(--num-processes, --process-id)")
            jax.distributed.initialize(cfg.coordinator_address, cfg.num_processes, cfg.process_id, **kwargs)
            how = "explicit"
        else:
            jax.distributed.initialize(**kwargs)
            how = cluster.rstrip("?")
    except ValueError as err:
        if cluster == "tpu?":  # a single TPU VM, not a pod: one process
            return ProcessInfo("single", 0, 1)
        raise IcrlError(f"distributed: cannot initialise ({how_text(cfg, cluster)}): {err}") from None
    return ProcessInfo(how, jax.process_index(), jax.process_count())


def how_text(cfg: DistributedConfig, cluster: str | None) -> str:
    """One phrase naming where the settings came from, for messages."""
    if cfg.coordinator_address is not None:
        return (f"coordinator {cfg.coordinator_address}, {cfg.num_processes} processes, "
                f"process id {cfg.process_id}")
    return f"detected {cluster}"
