"""Where the solver's arrays live: the placement helpers behind :mod:`jloss.sharding`.

The public placement functions (``shard_data``, ``replicate``, ``shard_grid``) are in
:mod:`jloss.sharding`; this module holds what they share with the solve: putting an array on a
mesh (also across processes), reading the sharding of the data a minibatch run slices, and
placing a sharded sweep's members.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

__all__ = [
    "spec0",
    "axes_of",
    "put",
    "leading_sharding",
    "minibatch_sharding",
    "minibatch_options",
    "members_sharding",
    "place_members",
]


def spec0(axes: tuple[str, ...]) -> Any:
    """The PartitionSpec entry that shards one dimension over ``axes``."""
    return axes[0] if len(axes) == 1 else axes


def axes_of(entry: Any) -> tuple[str, ...]:
    if entry is None:
        return ()
    return (entry,) if isinstance(entry, str) else tuple(entry)


def put(x: Any, sharding: NamedSharding, global_rows: int | None) -> jax.Array:
    """``x`` placed with ``sharding``: ``device_put`` in one process; across processes ``x`` is
    this process's part (its rows, or the whole array when replicated)."""
    if jax.process_count() == 1:
        return jax.device_put(x, sharding)
    x = np.asarray(x)
    shape = None if global_rows is None else (global_rows,) + x.shape[1:]
    return jax.make_array_from_process_local_data(sharding, x, shape)


def leading_sharding(name: str, what: str, tree: Any) -> tuple[Mesh, tuple[str, ...]] | None:
    """The mesh and axes that the leading axis of the concrete arrays in ``tree`` is sharded
    over, or None (unsharded, single device, or traced). Conflicting placements are an error."""
    found = None
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
        if not isinstance(leaf, jax.Array) or isinstance(leaf, jax.core.Tracer):
            continue
        sharding = leaf.sharding
        if not isinstance(sharding, NamedSharding) or not sharding.spec or leaf.ndim == 0:
            continue
        axes = axes_of(sharding.spec[0])
        if not axes or math.prod(sharding.mesh.shape[a] for a in axes) == 1:
            continue
        where = f"{what}{jax.tree_util.keystr(path)}"
        if found is None:
            found = (sharding.mesh, axes, where)
        elif (sharding.mesh, axes) != found[:2]:
            raise ValueError(
                f"{name}: {found[2]} and {where} are sharded differently along their leading "
                f"axis (over {found[1]} of {found[0]} and over {axes} of {sharding.mesh}); "
                "place them alike, e.g. with jloss.sharding.shard_data."
            )
    return None if found is None else found[:2]


def minibatch_sharding(name: str, data: Any, batch_size: int) -> tuple[int, Any]:
    """``(D, NamedSharding)`` for minibatches drawn per shard of ``data``, or ``(1, None)``.

    ``data`` are the arguments that minibatch mode slices. ``batch_size`` must be a multiple of D.
    """
    found = leading_sharding(name, "the data", data)
    if found is None:
        return 1, None
    mesh, axes = found
    types = dict(zip(mesh.axis_names, mesh.axis_types))
    explicit = [a for a in axes if types[a] == AxisType.Explicit]
    if explicit:
        raise ValueError(
            f"{name}: minibatch mode needs the data's mesh axes to be AxisType.Auto, but "
            f"{explicit} are Explicit; build the mesh with jloss.sharding.make_mesh (or "
            "jax.make_mesh(..., axis_types=(AxisType.Auto, ...)))."
        )
    d = math.prod(mesh.shape[a] for a in axes)
    n = np.shape(jax.tree_util.tree_leaves(data)[0])[0]
    if n % d:  # jax.Array does not shard unevenly today; a clear message if it ever does
        raise ValueError(f"{name}: N={n} rows are sharded over {d} devices, which do not divide N.")
    if batch_size % d:
        lo, hi = batch_size - batch_size % d, batch_size + (-batch_size % d)
        hint = f"{lo} or {hi}" if lo else f"{hi}"
        raise ValueError(
            f"{name}: batch_size={batch_size} with data sharded over {d} devices (mesh axis "
            f"{spec0(axes)!r}): every step takes batch_size / {d} rows from each device's shard, "
            f"so batch_size must be a multiple of {d}, e.g. {hint}."
        )
    return d, NamedSharding(mesh, PartitionSpec(spec0(axes)))


def minibatch_options(
    name: str, args: tuple, batch_size: int | None, batch_args: tuple[int, ...], shift: int = 0
) -> dict:
    """The :class:`jloss._options.Options` fields ``batch_shards``/``batch_sharding`` for ``minimize``/``sweep``:
    ``batch_args`` are the (validated) indices of the data arguments, shifted by ``shift``."""
    if batch_size is None:
        return {}
    data = [args[i - shift] for i in batch_args]
    d, sharding = minibatch_sharding(name, data, batch_size)
    return {"batch_shards": d, "batch_sharding": sharding}


def members_sharding(grid: Any) -> NamedSharding | None:
    """The sharding of a sweep grid's leading axis (None: not sharded), for the members' state."""
    found = leading_sharding("sweep", "grid", grid)
    if found is None:
        return None
    mesh, axes = found
    return NamedSharding(mesh, PartitionSpec(spec0(axes)))


def place_members(sharding: NamedSharding, tree: Any) -> Any:
    """The members' starting state (leading axis K) placed like the grid it belongs to."""

    def place(x):
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            return x  # already a global array (a previous sweep's result)
        return put(x, sharding, np.shape(x)[0])

    return jax.tree_util.tree_map(place, tree)
