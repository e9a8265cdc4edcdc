"""The device mesh, and the shardings of parameters and batches on it.

Mesh axes are ``(data, fsdp, tensor)``, sized by ``MeshConfig`` (one size may be -1: the devices the
others leave). Parameters carry logical axis names (``icrl.model.axes``); the config's rule table
maps each name to mesh axes, giving one ``PartitionSpec`` per parameter. A dimension the mapped
mesh axes do not divide, or a mesh axis already used by an earlier dimension of the same parameter,
is replicated instead, and reported: so one rule table works for every mesh and model size.

Activations are constrained by the same table (``activation_sharding``): the model names their
axes (``icrl.model.axes.ACTIVATION_AXES``: batch, sequence, act_embed, act_heads, act_kv, act_mlp)
and the step traces it inside ``icrl.model.axes.activation_sharding`` with the function made here;
``batch`` always follows ``batch_axes``, so activations are split as their input batch is.

The batch dimension is split over ``batch_axes`` (default ``data`` and ``fsdp``). Each process
loads the rows its devices hold (``data_slice``) and ``global_batch`` assembles the process-local
arrays into global ones with ``jax.make_array_from_process_local_data``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from icrl.errors import IcrlError
from icrl.train.config import MESH_AXES, MeshConfig


def mesh_shape(cfg: MeshConfig, device_count: int) -> tuple[int, ...]:
    """Axis sizes (data, fsdp, tensor) with -1 resolved; IcrlError if they do not fit the devices."""
    sizes = cfg.sizes()
    named = " x ".join(f"{k}={v}" for k, v in sizes.items())
    free = [k for k, v in sizes.items() if v == -1]
    fixed = math.prod(v for v in sizes.values() if v != -1)
    if free:
        if device_count % fixed:
            raise IcrlError(f"mesh {named}: the fixed axes need a multiple of {fixed} devices, "
                            f"but {device_count} devices are available")
        sizes[free[0]] = device_count // fixed
    elif fixed != device_count:
        raise IcrlError(f"mesh {named} has {fixed} devices, but {device_count} devices are available "
                        f"(set the sizes to multiply to {device_count}, or one of them to -1)")
    return tuple(sizes[a] for a in MESH_AXES)


def build_mesh(cfg: MeshConfig, devices: Sequence[Any] | None = None) -> Mesh:
    """The (data, fsdp, tensor) mesh over ``devices`` (default: every device of every process)."""
    devices = list(jax.devices() if devices is None else devices)
    shape = mesh_shape(cfg, len(devices))
    auto = (jax.sharding.AxisType.Auto,) * len(MESH_AXES)
    return jax.make_mesh(shape, MESH_AXES, axis_types=auto, devices=devices)


def _axes(target: str | list[str] | None) -> tuple[str, ...]:
    if target is None:
        return ()
    return (target,) if isinstance(target, str) else tuple(target)


def logical_spec(names: Sequence[str], shape: Sequence[int], rules: Mapping[str, Any],
                 mesh: Mesh) -> tuple[P, list[str]]:
    """PartitionSpec of one array whose axes carry logical ``names``; plus notes on replicated dims."""
    used: set[str] = set()
    spec, notes = [], []
    for dim, (name, size) in enumerate(zip(names, shape, strict=True)):
        live = [a for a in _axes(rules.get(name)) if mesh.shape[a] > 1]
        axes = tuple(a for a in live if a not in used)
        if len(axes) < len(live):
            notes.append(f"dim {dim} ({name}) drops mesh axes already used by another dim")
        n = math.prod(mesh.shape[a] for a in axes)
        if axes and size % n:
            notes.append(f"dim {dim} ({name}, size {size}) is not divisible by {'x'.join(axes)}={n}: replicated")
            axes = ()
        used.update(axes)
        spec.append(None if not axes else axes[0] if len(axes) == 1 else axes)
    while spec and spec[-1] is None:
        spec.pop()
    return P(*spec), notes


def param_shardings(abstract_params: Any, rules: Sequence[tuple[str, Any]], mesh: Mesh) -> tuple[dict, list[str]]:
    """Shardings of a model's parameters (pure nested dict, like ``nnx.to_pure_dict``) and notes.

    ``abstract_params``: the ``nnx.State`` of ``nnx.Param`` variables of an ``nnx.eval_shape`` model,
    each carrying its logical names as ``out_sharding`` metadata.
    """
    from flax import nnx

    table = dict(rules)
    out: dict = {}
    notes: list[str] = []
    for path, var in nnx.to_flat_state(abstract_params):
        names = var.get_metadata().get("out_sharding")
        where = ".".join(map(str, path))
        if names is None or len(names) != len(var.shape):
            raise ValueError(f"parameter {where} has no logical axis names for its shape {var.shape}")
        spec, why = logical_spec(names, var.shape, table, mesh)
        notes += [f"{where}: {n}" for n in why]
        node = out
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = NamedSharding(mesh, spec)
    return out, notes


def activation_sharding(mesh: Mesh, rules: Sequence[tuple[str, Any]],
                        batch_axes: Sequence[str]) -> Callable[[Sequence[str], Sequence[int]], NamedSharding]:
    """``spec_for(names, shape)`` for ``icrl.model.axes.activation_sharding``: the sharding of an
    activation whose axes carry logical ``names``, by the rule table with ``batch`` → ``batch_axes``.
    Dimensions the mesh axes do not divide are replicated, as for parameters (``logical_spec``)."""
    table = dict(rules) | {"batch": list(batch_axes)}

    def spec_for(names: Sequence[str], shape: Sequence[int]) -> NamedSharding:
        return NamedSharding(mesh, logical_spec(names, shape, table, mesh)[0])

    return spec_for


def gathered(shardings: Any, axis: str = "fsdp") -> Any:
    """The same shardings without mesh ``axis``: where FSDP-stored parameters are used.

    Parameters are stored split over ``fsdp`` and gathered for the forward and backward pass
    (ZeRO-3); their gradients are reduce-scattered back. Without this, XLA's sharding propagation
    may split activations' feature dimension over ``fsdp`` as well as their batch dimension.
    """

    def drop(s: NamedSharding) -> NamedSharding:
        spec = []
        for entry in s.spec:
            axes = tuple(a for a in ((entry,) if isinstance(entry, str) else entry or ()) if a != axis)
            spec.append(None if not axes else axes[0] if len(axes) == 1 else axes)
        return NamedSharding(s.mesh, P(*spec))

    return jax.tree.map(drop, shardings, is_leaf=lambda x: isinstance(x, NamedSharding))


def replicated(mesh: Mesh) -> NamedSharding:
    """Every device holds the whole array."""
    return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh, batch_axes: Sequence[str]) -> NamedSharding:
    """Split the leading (batch) dimension over ``batch_axes``, the rest replicated."""
    axes = tuple(a for a in batch_axes if mesh.shape[a] > 1)
    return NamedSharding(mesh, P(axes if axes else None))


def batch_shards(mesh: Mesh, batch_axes: Sequence[str]) -> int:
    """How many pieces the batch dimension is cut into."""
    return math.prod(mesh.shape[a] for a in batch_axes)


def check_batch(global_batch: int, grad_accum: int, mesh: Mesh, batch_axes: Sequence[str]) -> None:
    """IcrlError unless each microbatch splits evenly over the batch axes."""
    n = batch_shards(mesh, batch_axes)
    if global_batch % (grad_accum * n):
        axes = " x ".join(f"{a}={mesh.shape[a]}" for a in batch_axes)
        raise IcrlError(f"data.batch_size={global_batch} with train.grad_accum={grad_accum} gives microbatches of "
                        f"{global_batch / grad_accum:g} sequences, which do not split over the batch axes "
                        f"{axes} ({n} shards): make data.batch_size a multiple of {grad_accum * n}")


def data_slice(mesh: Mesh, batch_axes: Sequence[str]) -> tuple[int, int]:
    """(slice index, slice count) of the batch rows this process's devices hold.

    The batch is cut into ``count`` equal contiguous slices; processes whose devices hold the same
    rows (a tensor or replicated axis spanning processes) share a slice and load the same data. For
    a mesh laid out process by process along the batch axes this is (process_index, process_count).
    """
    sharding = batch_sharding(mesh, batch_axes)
    n = batch_shards(mesh, batch_axes)
    rows: dict[int, set[int]] = {}
    for device, index in sharding.devices_indices_map((n,)).items():
        rng = range(n)[index[0]]
        rows.setdefault(device.process_index, set()).update(rng)
    blocks = {}
    for proc, held in rows.items():
        lo, hi = min(held), max(held) + 1
        if len(held) != hi - lo:
            raise IcrlError(f"mesh layout: process {proc} holds batch shards {sorted(held)}, not one contiguous "
                            f"block; order the mesh so each process's devices are adjacent along {batch_axes}")
        blocks[proc] = (lo, hi)
    sizes = {hi - lo for lo, hi in blocks.values()}
    starts = sorted({lo for lo, _ in blocks.values()})
    if len(sizes) != 1 or len(starts) * next(iter(sizes)) != n:
        raise IcrlError(f"mesh layout: processes hold uneven or overlapping batch blocks {sorted(blocks.values())}")
    return starts.index(blocks[jax.process_index()][0]), len(starts)


def global_batch(local: Mapping[str, Any], sharding: NamedSharding, global_rows: int) -> dict:
    """This process's rows (numpy, nested dicts allowed) → global ``jax.Array`` s split by ``sharding``."""

    def one(x: np.ndarray) -> jax.Array:
        x = np.asarray(x)
        return jax.make_array_from_process_local_data(sharding, x, (global_rows, *x.shape[1:]))

    return jax.tree.map(one, dict(local))
