"""Scale ``minimize`` and ``sweep`` out over several devices (and hosts) with ``jax.sharding``.

jloss has no distributed scheme of its own: it places arrays with :class:`jax.sharding.NamedSharding`
over a :class:`jax.sharding.Mesh` and lets XLA's SPMD partitioner split the compiled loop. These
helpers build the placements; :func:`jloss.minimize` and :func:`jloss.sweep` take the placed
arrays as they are.

* **Data parallelism.** ``shard_data((X, y))`` splits the rows (axis 0) over the devices; params
  stay replicated. In full-batch mode each device evaluates the loss on its rows and only the
  gradient (and the loss) is summed across devices: the data never moves. In minibatch mode
  (``batch_size=B``) with data sharded over D devices, each step takes ``B / D`` rows from every
  device's own rows (a per-shard shuffle, see below), so again only the gradient crosses devices.
* **Sweep parallelism.** ``shard_grid(grid)`` spreads a sweep's K members over the devices; the
  data is then replicated (``replicate``, or plain NumPy arrays) or, on a 2-D mesh, sharded over
  the other axis (``make_mesh((2, 2), ("members", "data"))``).
* **Many hosts.** Run the same script on every host after ``jax.distributed.initialize(...)``;
  ``shard_data`` then takes *this process's* rows and assembles the global array with
  ``jax.make_array_from_process_local_data``; see the README's "Scaling out" section.

The minibatch schedule on sharded data: with data sharded over D devices (N rows, N / D per
device), every epoch draws one permutation of the N / D local rows per device (keys
``jax.random.split(jax.random.fold_in(key, epoch), D)``) and step ``i`` of the epoch takes rows
``i * B / D`` to ``(i + 1) * B / D`` of each, so a batch holds ``B / D`` rows of every device and
an epoch is ``(N / D) // (B / D)`` steps. ``B`` must be a multiple of D. It is a different (equally
uniform without replacement within each shard) schedule from the single-device one, so a
minibatch run depends on D; full-batch runs do not (beyond float summation order).

Meshes: :func:`make_mesh` builds meshes whose axes are ``AxisType.Auto`` (sharding propagated by
the compiler), which is what a loss written with plain ``jnp`` needs. ``jax.make_mesh`` defaults to
``Explicit`` axes in this JAX, under which e.g. the gradient of ``X @ w`` with sharded rows is a
type error unless the loss states its output shardings; minibatch mode rejects data sharded over
``Explicit`` axes.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from jloss import checks
from jloss._options import grid_size
from jloss._placement import put, spec0

__all__ = ["make_mesh", "shard_data", "replicate", "shard_grid"]


# ----------------------------------------------------------------------------------------------
# Meshes and specs
# ----------------------------------------------------------------------------------------------


def make_mesh(
    axis_shapes: Sequence[int] | None = None,
    axis_names: Sequence[str] = ("data",),
    *,
    devices: Sequence[Any] | None = None,
) -> Mesh:
    """A device mesh with ``Auto`` axes (``jax.make_mesh`` with ``axis_types=Auto``).

    Args:
      axis_shapes: devices along each axis; ``None``: one axis over all devices (``devices`` or
        ``jax.devices()``, which spans every host after ``jax.distributed.initialize``).
      axis_names: one name per axis, e.g. ``("members", "data")`` for a sweep whose members are
        spread over one axis and whose data is sharded over the other.
      devices: the devices to use (default: all).

    >>> mesh = make_mesh()
    >>> mesh.axis_names, mesh.size == len(jax.devices())
    (('data',), True)
    """
    axis_names = tuple(axis_names)
    devices = list(jax.devices() if devices is None else devices)
    if axis_shapes is None:
        if len(axis_names) != 1:
            raise ValueError(
                f"make_mesh: axis_shapes=None makes one axis over all devices, but {len(axis_names)} "
                f"axis names were given ({axis_names}); pass axis_shapes too."
            )
        axis_shapes = (len(devices),)
    axis_shapes = tuple(int(s) for s in axis_shapes)
    if len(axis_shapes) != len(axis_names):
        raise ValueError(
            f"make_mesh: {len(axis_shapes)} axis sizes {axis_shapes} but {len(axis_names)} axis "
            f"names {axis_names}."
        )
    if math.prod(axis_shapes) != len(devices):
        raise ValueError(
            f"make_mesh: a mesh of shape {axis_shapes} needs {math.prod(axis_shapes)} devices, "
            f"but {len(devices)} are available."
        )
    return jax.make_mesh(
        axis_shapes, axis_names, axis_types=(AxisType.Auto,) * len(axis_names), devices=devices
    )


def _mesh_and_axes(name: str, mesh: Any, axis: Any) -> tuple[Mesh, tuple[str, ...]]:
    """The mesh (default: :func:`make_mesh`) and the axis names to shard over (default: all)."""
    if mesh is None:
        mesh = make_mesh()
    if not isinstance(mesh, Mesh):
        raise TypeError(
            f"{name}: mesh must be a jax.sharding.Mesh (e.g. jloss.sharding.make_mesh()), got "
            f"{type(mesh).__name__}."
        )
    if axis is None:
        axes = tuple(mesh.axis_names)
    else:
        axes = (axis,) if isinstance(axis, str) else tuple(axis)
    for a in axes:
        if a not in mesh.axis_names:
            raise ValueError(
                f"{name}: the mesh has no axis {a!r}; its axes are {tuple(mesh.axis_names)}."
            )
    if len(set(axes)) != len(axes) or not axes:
        raise ValueError(f"{name}: axis must name distinct mesh axes, got {axis!r}.")
    return mesh, axes


def _local_blocks(mesh: Mesh, axes: tuple[str, ...]) -> int:
    """How many distinct blocks of a dimension sharded over ``axes`` this process holds."""
    me = jax.process_index()
    index = [mesh.axis_names.index(a) for a in axes]
    coords = {
        tuple(pos[i] for i in index)
        for pos in np.ndindex(mesh.devices.shape)
        if mesh.devices[pos].process_index == me
    }
    return len(coords)


def _rows(name: str, what: str, tree: Any) -> int:
    """The common leading size of the array leaves of ``tree``."""
    leaves = jax.tree_util.tree_leaves_with_path(tree)
    if not leaves:
        raise ValueError(f"{name}: {what} holds no arrays.")
    n, _ = checks.leading_size(
        checks.labelled_leaves(what, tree),
        lambda where: f"{name}: {where} is a scalar; every array is split along its leading axis.",
        lambda first, n, where, m: (
            f"{name}: the arrays must share their leading size: {first} has {n} rows but "
            f"{where} has {m}."
        ),
    )
    return int(n)


# ----------------------------------------------------------------------------------------------
# Placement helpers
# ----------------------------------------------------------------------------------------------


def shard_data(arrays: Any, mesh: Mesh | None = None, *, axis: Any = None, pad: bool = False):
    """Split the rows (axis 0) of every array in ``arrays`` over the devices of ``mesh``.

    Args:
      arrays: a tuple (or any pytree) of arrays with the same leading size N, e.g. ``(X, y)``.
        With several processes (``jax.distributed``), this process's rows: the global array has
        ``N * (number of processes along the axis)`` rows, assembled by
        ``jax.make_array_from_process_local_data``.
      mesh: a :class:`jax.sharding.Mesh`; default :func:`make_mesh` (all devices, axis "data").
      axis: the mesh axis (a name or a tuple of names) the rows are split over; default: all the
        mesh's axes. Other dimensions are replicated.
      pad: if N is not a multiple of the D devices along ``axis``, append copies of the last row
        up to the next multiple and also return a boolean ``mask`` of shape (N_padded,), True
        on the real rows. Pass it to the loss as ``where=`` (every jloss loss takes ``where=``;
        masked samples are not counted in a mean) and, in minibatch mode, as a data argument so
        it is sliced with the rows. Without ``pad`` such an N is a ``ValueError``.

    Returns:
      the arrays with the same structure, each a ``jax.Array`` with
      ``NamedSharding(mesh, PartitionSpec(axis))``; with ``pad=True`` the pair ``(arrays, mask)``
      (``mask`` sharded the same way; all True when no padding was needed).

    >>> import numpy as np
    >>> (X, y), mask = shard_data((np.ones((5, 2)), np.zeros(5)), pad=True)
    >>> X.shape[0] % len(jax.devices()) == 0, int(mask.sum())
    (True, 5)
    """
    name = "shard_data"
    if not isinstance(pad, (bool, np.bool_)):
        raise TypeError(f"{name}: pad must be True or False, got {pad!r}.")
    mesh, axes = _mesh_and_axes(name, mesh, axis)
    n = _rows(name, "arrays", arrays)
    d = math.prod(mesh.shape[a] for a in axes)
    local = _local_blocks(mesh, axes) if jax.process_count() > 1 else d
    held = "this process's" if jax.process_count() > 1 else "the"
    missing = -n % local
    if missing and not pad:
        raise ValueError(
            f"{name}: N={n} rows cannot be split evenly over {held} {local} devices of mesh axis "
            f"{spec0(axes)!r}: N must be a multiple of {local}. Pass pad=True to pad to "
            f"{n + missing} rows and get a mask for where=, or drop {n % local} rows."
        )
    sharding = NamedSharding(mesh, PartitionSpec(spec0(axes)))
    procs = d // local

    def place(x):
        x = np.asarray(x) if not isinstance(x, jax.Array) else x
        if missing:
            edge = np.repeat(np.asarray(x[-1:]), missing, axis=0)
            x = np.concatenate([np.asarray(x), edge], axis=0)
        return put(x, sharding, (n + missing) * procs)

    placed = jax.tree_util.tree_map(place, arrays)
    if not pad:
        return placed
    mask = np.arange(n + missing) < n
    return placed, put(mask, sharding, (n + missing) * procs)


def replicate(tree: Any, mesh: Mesh | None = None) -> Any:
    """Every array of ``tree`` copied to all devices of ``mesh`` (``PartitionSpec()``).

    For params and for data that every device needs whole (e.g. a sweep's data when its members
    are spread over the devices). With several processes, every process passes the same values.
    """
    mesh, _ = _mesh_and_axes("replicate", mesh, None)
    sharding = NamedSharding(mesh, PartitionSpec())
    return jax.tree_util.tree_map(lambda x: put(x, sharding, None), tree)


def shard_grid(grid: Any, mesh: Mesh | None = None, *, axis: Any = None) -> Any:
    """A sweep's grid split along its leading axis K over the devices of ``mesh``.

    :func:`jloss.sweep` then runs K / D members on each of the D devices (every field of its
    result keeps that sharding). ``grid`` is an array or a pytree of arrays with leading axis K,
    as for ``sweep``; ``axis`` as for :func:`shard_data`. K must be a multiple of D (a ``ValueError``
    says so): add members (more values to try) rather than padding. With several processes,
    every process passes the whole grid.
    """
    name = "shard_grid"
    mesh, axes = _mesh_and_axes(name, mesh, axis)
    k = grid_size(name, grid)
    d = math.prod(mesh.shape[a] for a in axes)
    if k % d:
        raise ValueError(
            f"{name}: a grid of K={k} members cannot be split evenly over the {d} devices of mesh "
            f"axis {spec0(axes)!r}: K must be a multiple of {d} (e.g. {k + (-k % d)} values)."
        )
    sharding = NamedSharding(mesh, PartitionSpec(spec0(axes)))
    # Every process holds the whole grid (global shape = local shape); each device takes its part.
    return jax.tree_util.tree_map(lambda x: put(x, sharding, k), grid)
