"""The minibatch schedule: which rows of the data each step of a minibatch solve reads.

The N samples are shuffled once per epoch (``jax.random.permutation(fold_in(key, epoch), N)``)
and step ``t`` of an epoch reads the next ``batch_size`` indices. With data sharded over D
devices (``Options.batch_shards``), every shard has its own permutation of its N / D rows and
each step takes ``batch_size / D`` rows of every shard, a gather that stays on the devices that
hold the rows (see :mod:`jloss.sharding`).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

__all__ = ["MinibatchSchedule", "example_batch"]


class MinibatchSchedule:
    """The epochs and batches of a minibatch solve (traceable; ``key`` is the shuffles' key).

    ``options`` gives ``batch_size``, ``batch_args`` (the indices of the data among the
    arguments of ``fun``), ``batch_shards`` and ``batch_sharding``; ``args`` are those arguments.
    """

    def __init__(self, options: Any, args: tuple, key: Any):
        self.key = key
        self.batch_size = options.batch_size
        self.batch_args = options.batch_args
        self.sharding = options.batch_sharding
        data = args[options.batch_args[0]]
        self.n = jax.tree_util.tree_leaves(data)[0].shape[0]
        # D shards of n // D rows, each giving batch_size // D rows per step (D = 1 unsharded).
        self.shards = options.batch_shards
        # An epoch is n // batch_size steps; the last partial batch of each epoch is dropped.
        self.n_batches = (self.n // self.shards) // (options.batch_size // self.shards)

    def epoch_perm(self, t):
        """The permutation of the N samples used by global step ``t``'s epoch; with D shards, a
        permutation of each shard's N / D rows, shape (D, N / D)."""
        key = jax.random.fold_in(self.key, t // self.n_batches)
        if self.shards == 1:
            return jax.random.permutation(key, self.n)
        local = self.n // self.shards
        perms = jax.vmap(lambda k: jax.random.permutation(k, local))(
            jax.random.split(key, self.shards)
        )
        return self.on_shards(perms, split=True)

    def new_epoch(self, t) -> jax.Array:
        """Whether global step ``t`` is the first of an epoch."""
        return t % self.n_batches == 0

    def on_shards(self, x, split: bool):
        """``x`` constrained to the data's devices: axis 0 over the data axis (``split``: axis 0
        is the shard, axis 1 a shard's rows); no-op without a ``batch_sharding``."""
        sharding = self.sharding
        if sharding is None:
            return x
        free = jax.sharding.PartitionSpec.UNCONSTRAINED
        lead = (sharding.spec[0], None) if split else (sharding.spec[0],)
        spec = jax.sharding.PartitionSpec(*lead, *[free] * (x.ndim - len(lead)))
        return lax.with_sharding_constraint(x, jax.sharding.NamedSharding(sharding.mesh, spec))

    def take_batch(self, x, idx):
        """Rows ``idx`` of ``x``; with D shards ``idx`` (D, B / D) indexes each shard's own rows
        (x[s * N / D + idx[s]]), a gather batched over the shards that stays on their devices."""
        if self.shards == 1:
            return jnp.take(x, idx, axis=0)
        tail = x.shape[1:]
        shards = self.on_shards(x.reshape((self.shards, -1) + tail), split=True)
        rows = jax.vmap(lambda block, i: jnp.take(block, i, axis=0))(shards, idx)
        return self.on_shards(rows.reshape((-1,) + tail), split=False)

    def batch(self, args: tuple, perm, t) -> tuple:
        """The arguments of ``fun`` at global step ``t`` of the epoch whose permutation is ``perm``."""
        bs = self.batch_size // self.shards  # rows per shard
        idx = lax.dynamic_slice_in_dim(perm, (t % self.n_batches) * bs, bs, axis=perm.ndim - 1)
        return tuple(
            jax.tree_util.tree_map(lambda x: self.take_batch(x, idx), a) if i in self.batch_args else a
            for i, a in enumerate(args)
        )


def example_batch(args: tuple, options: Any) -> tuple:
    """Shapes of the arguments ``fun`` receives in one step (a batch in minibatch mode)."""
    if options.batch_size is None:
        return args
    bs = options.batch_size
    return tuple(
        jax.tree_util.tree_map(
            lambda x: jax.ShapeDtypeStruct((bs,) + jnp.shape(x)[1:], jnp.result_type(x)), a
        )
        if i in options.batch_args
        else a
        for i, a in enumerate(args)
    )
