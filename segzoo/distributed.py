"""Where a training runs: every device setup behind one interface, from one device to many machines.

:func:`start_run` turns the device options of a training into a run context,
one of two kinds with the same interface (``is_chief``, ``num_devices``,
``num_local_devices``, ``scope()``, ``data_shard()``,
``barrier()``, ``chief_first()``), so that :func:`segzoo.training.train`
reads the same whatever the devices:

- :class:`LocalRun`, the trivial case: one process, with TensorFlow's
  ``tf.distribute`` placing the model on one device (the default), on one
  chosen GPU (``gpu``) or mirrored on every GPU of the machine
  (``multi_gpu``, ``MirroredStrategy``; see :func:`make_strategy`);
- :class:`DataParallelRun` (``distributed``): the JAX backend with
  ``keras.distribution.DataParallel`` over every device of one or several
  processes.

Keras 3 has no multi-worker ``tf.distribute`` strategy (keras issue 20585);
its supported path across machines is the JAX backend with
``keras.distribution.DataParallel`` over the devices of every process, the
processes joined by ``jax.distributed``. That path has three steps:

1. :func:`resolve_cluster`: who am I, how many are we, where is process 0,
   from explicit values, segzoo's own variables (``SEGZOO_COORDINATOR_ADDRESS``,
   ``SEGZOO_NUM_PROCESSES``, ``SEGZOO_PROCESS_ID``) or what a scheduler sets
   (SLURM; a Kubernetes indexed Job or JobSet: ``JOB_COMPLETION_INDEX``).
2. :func:`start`: ``jax.distributed.initialize`` (several processes), then
   ``keras.distribution.set_distribution(DataParallel(...))`` over all devices
   of all processes: model variables are replicated, every batch is split
   along its first axis across devices, gradients are averaged over the
   global batch (batch-norm statistics too: one global batch, as on one device).
3. Per-host data: each process reads its own shard of the data
   (:meth:`DataParallelRun.data_shard`, for ``segzoo.data.load``) and feeds
   ``batch_size x local devices`` images per step; Keras assembles the global
   batch from the processes' parts (``jax.make_array_from_process_local_data``).

Every process must run the same steps: the same number of batches, the same
collective operations. Only process 0 (:attr:`DataParallelRun.is_chief`)
writes files or prints; it saves checkpoints inside :func:`without_distribution`
(the replicated variables are read locally, and what Keras creates while
saving stays local instead of waiting for the other processes).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import re

import keras

logger = logging.getLogger(__name__)

ENV_COORDINATOR_ADDRESS = "SEGZOO_COORDINATOR_ADDRESS"
ENV_COORDINATOR_PORT = "SEGZOO_COORDINATOR_PORT"
ENV_NUM_PROCESSES = "SEGZOO_NUM_PROCESSES"
ENV_PROCESS_ID = "SEGZOO_PROCESS_ID"

#: Coordinator port when none is given. Under SLURM the port is this plus
#: ``SLURM_JOB_ID % 4096`` (as JAX's own SLURM detection does), so that two
#: jobs sharing a node do not collide.
DEFAULT_COORDINATOR_PORT = 61440


@dataclasses.dataclass(frozen=True)
class ClusterSettings:
    """Where this process stands in a multi-process run.

    Attributes:
        num_processes: processes in the run, one per machine as a rule (each
            uses all the devices it sees).
        process_id: this process's index in ``[0, num_processes)``; 0 is the
            coordinator and the one that writes checkpoints and logs.
        coordinator_address: ``"host:port"`` of process 0's coordination
            service; ``None`` for a single process.
        scheduler: the scheduler found in the environment, for messages:
            ``"SLURM"``, ``"Kubernetes"`` or ``None``.
    """

    num_processes: int = 1
    process_id: int = 0
    coordinator_address: str | None = None
    scheduler: str | None = None

    def __post_init__(self):
        where = f" (from {self.scheduler})" if self.scheduler else ""
        if self.num_processes < 1:
            raise ValueError(f"num_processes must be at least 1, got {self.num_processes}{where}.")
        if not 0 <= self.process_id < self.num_processes:
            raise ValueError(f"process_id must be in [0, {self.num_processes}) for {self.num_processes} "
                             f"process(es), got {self.process_id}{where}.")
        if self.num_processes > 1:
            if not self.coordinator_address:
                raise ValueError(
                    f"{self.num_processes} processes need the coordinator's address (process 0's "
                    f"host:port): pass --coordinator_address HOST:PORT or set {ENV_COORDINATOR_ADDRESS}.")
            host, _, port = self.coordinator_address.rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f"coordinator_address must be 'host:port', got "
                                 f"{self.coordinator_address!r}{where}.")

    @property
    def is_chief(self) -> bool:
        """Whether this is process 0, the one that writes files and prints."""
        return self.process_id == 0


def first_slurm_host(nodelist: str) -> str:
    """The first host of a SLURM node list: ``"gpu[03-05,09],cpu1"`` -> ``"gpu03"``.

    Handles SLURM's compressed form: comma-separated entries, each with bracketed
    ranges (``[1-4]``), lists (``[1,3]``) and zero padding, possibly several
    brackets in one name (``"rack[1-2]-node[01-04]"`` -> ``"rack1-node01"``).
    """
    depth, end = 0, len(nodelist)
    for index, char in enumerate(nodelist):
        depth += (char == "[") - (char == "]")
        if char == "," and depth == 0:
            end = index
            break
    entry = nodelist[:end].strip()
    host = re.sub(r"\[([^\]]*)\]", lambda match: re.split(r"[,-]", match.group(1))[0], entry)
    if not host or "[" in host or "]" in host:
        raise ValueError(f"Cannot read a host name from the SLURM node list {nodelist!r}.")
    return host


def _int_variable(environ, name):
    value = environ.get(name)
    if value in (None, ""):
        return None
    try:
        return int(value)
    except ValueError as error:
        raise ValueError(f"The environment variable {name}={value!r} must be an integer.") from error


def _scheduler_settings(environ, coordinator_port):
    """``(scheduler, {field: value})`` from the variables SLURM or a Kubernetes indexed Job set."""
    if "SLURM_PROCID" in environ and "SLURM_NTASKS" in environ:
        values = {"num_processes": _int_variable(environ, "SLURM_NTASKS"),
                  "process_id": _int_variable(environ, "SLURM_PROCID")}
        nodelist = environ.get("SLURM_STEP_NODELIST") or environ.get("SLURM_JOB_NODELIST")
        if nodelist:
            if coordinator_port is None:
                job_id = _int_variable(environ, "SLURM_JOB_ID") or 0
                coordinator_port = DEFAULT_COORDINATOR_PORT + job_id % 4096
            values["coordinator_address"] = f"{first_slurm_host(nodelist)}:{coordinator_port}"
        return "SLURM", values
    if "JOB_COMPLETION_INDEX" in environ:
        # An indexed Job (or a JobSet's job) numbers its pods; the pod count and
        # the coordinator's service name come from the manifest (SEGZOO_* variables).
        return "Kubernetes", {"process_id": _int_variable(environ, "JOB_COMPLETION_INDEX")}
    return None, {}


def resolve_cluster(coordinator_address=None, num_processes=None, process_id=None, coordinator_port=None,
                    environ=None) -> ClusterSettings:
    """This process's :class:`ClusterSettings`; each value from the first place that gives it.

    In order: the arguments (command-line flags); segzoo's variables
    ``SEGZOO_COORDINATOR_ADDRESS``, ``SEGZOO_NUM_PROCESSES``, ``SEGZOO_PROCESS_ID``;
    then the scheduler's:

    - SLURM (``srun``, one task per machine): ``SLURM_NTASKS`` processes,
      ``SLURM_PROCID``, coordinator on the first host of
      ``SLURM_STEP_NODELIST`` (else ``SLURM_JOB_NODELIST``).
    - Kubernetes indexed Job or JobSet: ``JOB_COMPLETION_INDEX`` is the process
      id; the manifest sets the count and coordinator (``SEGZOO_*``).

    Nothing set at all means a single process.

    Args:
        coordinator_address: ``"host:port"`` of process 0; a bare host takes
            ``coordinator_port``.
        num_processes: processes in the run.
        process_id: this process's index.
        coordinator_port: port for a coordinator host without one (SLURM's
            node); default ``SEGZOO_COORDINATOR_PORT``, else
            ``DEFAULT_COORDINATOR_PORT`` (+ ``SLURM_JOB_ID % 4096`` under SLURM).
        environ: the environment to read (default ``os.environ``).

    Raises:
        ValueError: for inconsistent or missing values, naming where they came from.
    """
    environ = os.environ if environ is None else environ
    if coordinator_port is None:
        coordinator_port = _int_variable(environ, ENV_COORDINATOR_PORT)
    scheduler, from_scheduler = _scheduler_settings(environ, coordinator_port)
    from_segzoo = {"coordinator_address": environ.get(ENV_COORDINATOR_ADDRESS) or None,
                   "num_processes": _int_variable(environ, ENV_NUM_PROCESSES),
                   "process_id": _int_variable(environ, ENV_PROCESS_ID)}
    given = {"coordinator_address": coordinator_address, "num_processes": num_processes,
             "process_id": process_id}
    values = {name: next((v for v in (given[name], from_segzoo[name], from_scheduler.get(name))
                          if v is not None), None) for name in given}
    address = values["coordinator_address"]
    if address and ":" not in address:
        address = f"{address}:{coordinator_port or DEFAULT_COORDINATOR_PORT}"
    if values["num_processes"] is None and values["process_id"]:
        raise ValueError(f"This is process {values['process_id']}, but the number of processes is unknown: "
                         f"pass --num_processes or set {ENV_NUM_PROCESSES}.")
    count = values["num_processes"] if values["num_processes"] is not None else 1
    if count > 1 and values["process_id"] is None:
        raise ValueError(f"{count} processes, but this one's process_id is unknown: pass --process_id "
                         f"or set {ENV_PROCESS_ID} (each process its own, 0 to {count - 1}).")
    return ClusterSettings(num_processes=count, process_id=values["process_id"] or 0,
                           coordinator_address=address, scheduler=scheduler)


@dataclasses.dataclass(frozen=True)
class LocalRun:
    """A run in this one process (see the module docstring): the trivial case of the run interface.

    Attributes:
        strategy: the ``tf.distribute`` strategy that places the model (:func:`make_strategy`);
            ``None`` on other backends (Keras's default device).
        num_devices: model replicas (the strategy's), all of them in this process.
    """

    strategy: object = None
    num_devices: int = 1
    #: Only one process writes files and prints: this one.
    is_chief = True

    @property
    def num_local_devices(self) -> int:
        """Devices of this process: all of them."""
        return self.num_devices

    def scope(self):
        """The context in which to build and compile the model (the strategy's scope)."""
        return self.strategy.scope() if self.strategy is not None else contextlib.nullcontext()

    def data_shard(self) -> dict:
        """``segzoo.data.load`` arguments of this process's part of the data: all of it."""
        return {}

    def barrier(self, name):
        """Wait for the other processes: there are none."""

    def chief_first(self, function):
        """Run ``function()`` and return its result (this process is the only one)."""
        return function()


@dataclasses.dataclass(frozen=True)
class DataParallelRun:
    """A started data-parallel run: its cluster, its distribution and its device counts.

    Attributes:
        cluster: this process's :class:`ClusterSettings`.
        distribution: the ``keras.distribution.DataParallel`` in force.
        num_devices: devices of all processes (model replicas).
        num_local_devices: devices of this process.
    """

    cluster: ClusterSettings
    distribution: object
    num_devices: int
    num_local_devices: int

    def scope(self):
        """The context in which to build the model: the distribution is already in force."""
        return contextlib.nullcontext()

    @property
    def is_chief(self) -> bool:
        """Whether this is process 0, the one that writes files and prints."""
        return self.cluster.is_chief

    def data_shard(self) -> dict:
        """``segzoo.data.load`` arguments that give this process its own part of the data."""
        return {"num_shards": self.cluster.num_processes, "shard_index": self.cluster.process_id}

    def barrier(self, name):
        """Wait until every process has reached the barrier called ``name`` (no-op for one process)."""
        if self.cluster.num_processes > 1:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices(name)

    def chief_first(self, function):
        """Run ``function()`` on process 0, then, once it returned, on every other process; return its result.

        For work on shared files that one process must do first (e.g. import a
        dataset that the others then find in place).
        """
        result = function() if self.is_chief else None
        self.barrier(f"segzoo: {getattr(function, '__name__', 'chief_first')}")
        return result if self.is_chief else function()


def start_run(distributed=False, multi_gpu=False, gpu=None, coordinator_address=None, coordinator_port=None,
              num_processes=None, process_id=None):
    """The run context for a training's device options: a :class:`LocalRun` or a :class:`DataParallelRun`.

    Must run before anything touches JAX or a GPU.

    Args:
        distributed: data parallel on the JAX backend over every device of
            every process (:func:`resolve_cluster` then :func:`start`).
        multi_gpu, gpu: TensorFlow's placement in one process (:func:`make_strategy`).
        coordinator_address, coordinator_port, num_processes, process_id:
            the cluster, for ``distributed`` (see :func:`resolve_cluster`).

    Raises:
        ValueError: cluster options without ``distributed``, or ``distributed``
            together with ``multi_gpu`` / ``gpu``.
    """
    cluster_options = {"coordinator_address": coordinator_address, "coordinator_port": coordinator_port,
                       "num_processes": num_processes, "process_id": process_id}
    if not distributed:
        if any(value is not None for value in cluster_options.values()):
            raise ValueError(f"{', '.join(cluster_options)} apply to distributed training: add distributed=True "
                             f"(--distributed) or drop them.")
        strategy = make_strategy(multi_gpu, gpu)
        return LocalRun(strategy, strategy.num_replicas_in_sync if strategy is not None else 1)
    if multi_gpu or gpu is not None:
        raise ValueError("distributed (JAX) and multi_gpu / gpu (TensorFlow) exclude each other: distributed "
                         "already uses every visible device (choose them with CUDA_VISIBLE_DEVICES).")
    return start(resolve_cluster(coordinator_address, num_processes, process_id, coordinator_port))


def make_strategy(multi_gpu=False, gpu=None):
    """The ``tf.distribute`` strategy for one device, one chosen GPU, or every GPU.

    Must run before TensorFlow touches a GPU. With ``multi_gpu`` and no GPU, the
    logical CPU devices are mirrored instead (how the tests check replication).

    Args:
        multi_gpu: mirror the model on every visible GPU (``MirroredStrategy``).
        gpu: index of the one GPU to use (``None``: TensorFlow's default).

    Returns:
        The strategy; ``None`` when the Keras backend is not TensorFlow.
    """
    if keras.backend.backend() != "tensorflow":
        if multi_gpu or gpu is not None:
            raise ValueError("multi_gpu and gpu need the TensorFlow backend; on JAX, distributed (--distributed) "
                             "uses every device.")
        return None
    import tensorflow as tf  # MirroredStrategy is TensorFlow's: the TF backend only.

    gpus = tf.config.list_physical_devices("GPU")
    if gpu is not None:
        if not 0 <= gpu < len(gpus):
            raise ValueError(f"gpu={gpu}, but {len(gpus)} GPU(s) are visible.")
        tf.config.set_visible_devices(gpus[gpu], "GPU")
        if not multi_gpu:
            return tf.distribute.OneDeviceStrategy("/gpu:0")
    if not multi_gpu:
        return tf.distribute.get_strategy()
    devices = [d.name for d in tf.config.list_logical_devices("GPU")]
    if not devices:
        devices = [d.name for d in tf.config.list_logical_devices("CPU")]
        logger.warning("multi_gpu: no GPU is visible; mirroring %d CPU device(s).", len(devices))
    return tf.distribute.MirroredStrategy(devices)


def start(cluster: ClusterSettings) -> DataParallelRun:
    """Join the processes of ``cluster`` and put ``DataParallel`` over all their devices into force.

    Must run before anything touches JAX (creating a model or a tensor) and
    before the model is built. Several processes: ``jax.distributed.initialize``
    with the coordinator (JAX's CPU collectives use gloo). Then
    ``keras.distribution.set_distribution(DataParallel(devices=jax.devices()))``,
    with automatic dataset sharding off: each process gives its own shard
    (:meth:`DataParallelRun.data_shard`). The distribution stays set after
    training, so that the trained model keeps working on every process.

    Raises:
        ValueError: when the Keras backend is not JAX.
    """
    if keras.backend.backend() != "jax":
        raise ValueError(
            f"distributed training (--distributed) needs the JAX backend, but Keras runs on "
            f"{keras.backend.backend()!r}: start Python with the environment variable KERAS_BACKEND=jax. "
            f"For several GPUs of one machine on TensorFlow, use --multi_gpu instead.")
    import jax

    if cluster.num_processes > 1 and not jax.distributed.is_initialized():
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(coordinator_address=cluster.coordinator_address,
                                   num_processes=cluster.num_processes, process_id=cluster.process_id)
    if jax.process_count() != cluster.num_processes:
        raise ValueError(f"JAX runs {jax.process_count()} process(es) but the cluster settings say "
                         f"{cluster.num_processes}; jax.distributed was initialised elsewhere with others.")
    devices = jax.devices()
    distribution = keras.distribution.DataParallel(devices=devices, auto_shard_dataset=False)
    keras.distribution.set_distribution(distribution)
    run = DataParallelRun(cluster, distribution, num_devices=len(devices),
                          num_local_devices=jax.local_device_count())
    if run.is_chief:
        coordinator = f", coordinator {cluster.coordinator_address}" if cluster.num_processes > 1 else ""
        scheduler = f" ({cluster.scheduler})" if cluster.scheduler else ""
        logger.info("Data parallel over %d %s device(s) in %d process(es)%s%s", run.num_devices,
                    devices[0].platform, cluster.num_processes, scheduler, coordinator)
    return run


@contextlib.contextmanager
def without_distribution():
    """Suspend the ``keras.distribution`` in force, for work that one process does alone.

    Saving a model on process 0 needs no other process (a ``DataParallel``
    model's variables are replicated, so each process holds them whole), but
    Keras creates a few variables while saving; under a multi-process
    distribution each of them would be placed on every process's devices and
    wait for processes that never come. Inside this context they stay local.
    """
    previous = keras.distribution.distribution()
    keras.distribution.set_distribution(None)
    try:
        yield
    finally:
        keras.distribution.set_distribution(previous)
