"""``minimize``: one compiled Optax loop with a status code, a loss history and minibatches.

``minimize(fun, init_params, optimizer, ...)`` runs any Optax ``GradientTransformation`` inside a
single ``lax.while_loop`` and returns a :class:`Result`, a pytree that passes through ``jax.jit``
and ``jax.vmap``.

Design notes (for the code that builds on this module):

* The solve itself is :func:`_solve`, a plain function
  ``(fun, optimizer, options) x (params0, args, opt_state0, tol, key, offset) -> Result``:
  ``fun``/``optimizer``/``options`` are static (Python objects), the rest are arrays. The data in
  ``args`` is loop-invariant: it is read by the loop body, never stored in the while-loop carry,
  so a ``vmap`` over hyperparameters (``jloss.sweep``) does not copy it once per member and a
  ``jax.custom_jvp`` around ``_solve`` (the differentiation module) can treat ``args`` as the
  differentiable inputs.
* ``minimize`` validates its inputs on the host, then calls ``_solve_jit``, ``_solve`` (with
  the derivative rule that ``options.diff`` selects, :mod:`jloss.differentiation`) under
  ``jax.jit`` with ``fun``, ``optimizer`` and the options static. A second call with new arrays
  of the same shapes reuses the compiled program. Static arguments are compared by identity for
  functions: build the optimizer (and ``fun``) once and reuse them; a fresh
  ``optax.adam(1e-3)`` or a fresh ``lambda`` is a new cache key and compiles again.
* The step is as lean as the hand-written ``lax.scan`` loop: the while loop takes every
  candidate step unguarded (its condition stops it on a non-finite one) and checks finiteness
  and the gradient norm in one fused reduction per leaf. Only a run that failed is replayed, up
  to its last good step, by a second while loop that takes no iterations otherwise
  (:meth:`_Solver.recover`); loops that run every step regardless (``jloss.sweep``'s batched
  loop, ``diff="unrolled"``'s scan) use the guarded step that masks each update instead.
* For a small state (params, optimizer state and gradient up to 1 MiB together) the
  full-batch loop takes two steps per iteration (:meth:`_Solver.run`), with the same result
  bitwise: on XLA CPU a small problem's step is mostly per-iteration and per-thunk overhead,
  and this runs it about 5-10% faster than the hand-written one-step ``lax.scan``.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import shutil
import sys
import time
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from jloss import checks
from jloss.sharding import _minibatch_options

__all__ = ["minimize", "Result", "Status"]

_RUNNING = -1  # internal status of a member that has not stopped yet; never returned
# The full-batch loop takes two steps per iteration while params, optimizer state and gradient
# take at most this many bytes (it keeps a second copy of them): see _Solver.run.
_PAIR_MAX_BYTES = 1 << 20


class Status(enum.IntEnum):
    """Why a run stopped. ``Result.status`` holds one of these codes as an int32 array."""

    CONVERGED = 0
    MAX_STEPS = 1
    NONFINITE = 2
    #: A non-smooth fit (:mod:`jloss.nonsmooth`) whose optimality conditions at the kinks were
    #: verified: a subgradient certificate, not a small gradient norm.
    OPTIMAL = 3

    @property
    def message(self) -> str:
        """A readable sentence for this status."""
        return _MESSAGES[self]


_MESSAGES = {
    Status.CONVERGED: "converged: gradient norm <= tol",
    Status.MAX_STEPS: "max_steps reached",
    Status.NONFINITE: "stopped: non-finite loss, gradient or params; returned the last finite ones",
    Status.OPTIMAL: "converged: optimality certified at the kinks (subgradient conditions hold to tol)",
}


@dataclasses.dataclass(frozen=True)
class Result:
    """What :func:`minimize` returns; a pytree (every field is an array or a pytree of arrays).

    Under ``jax.vmap`` (and in ``jloss.sweep``) every field gets a leading batch axis.

    Attributes:
      params: the returned parameters, same structure as ``init_params``. If the run stopped on a
        non-finite value these are the last parameters whose loss and gradient were finite.
      loss: ``fun(params, *args)`` at the returned ``params`` (full data, also in minibatch mode).
      grad_norm: global L2 norm of the gradient of ``fun`` at the returned ``params`` (full data).
      steps: int32, optimizer updates applied by this call (rejected non-finite steps not counted).
      total_steps: int32, ``steps`` plus the ``total_steps`` of the result passed as ``init``;
        it positions the minibatch schedule so that a warm start continues it.
      converged: bool, ``status == Status.CONVERGED`` (or ``Status.OPTIMAL`` for a certified
        non-smooth fit).
      status: int32 :class:`Status` code; ``message`` turns it into text on the host.
      history: loss after every update, shape ``(max_steps,)``, ``history[i]`` is the loss after
        update ``i + 1`` (so ``history[steps - 1] == loss`` in full-batch mode) and NaN from
        index ``steps`` on; minibatch losses in minibatch mode. ``None`` with ``history=False``.
      opt_state: the optimizer state that goes with ``params``; pass the result back as
        ``init=`` to continue exactly where this run stopped.
    """

    params: Any
    loss: jax.Array
    grad_norm: jax.Array
    steps: jax.Array
    total_steps: jax.Array
    converged: jax.Array
    status: jax.Array
    history: jax.Array | None
    opt_state: Any

    @property
    def message(self) -> str | list:
        """The status as text: a string, or nested lists of strings for a batched result."""
        if isinstance(self.status, jax.core.Tracer):
            raise TypeError(
                "Result.message is computed on the host; it is not available inside jax.jit or "
                "jax.vmap. Return the result from the transformed function and read it there."
            )
        codes = np.asarray(self.status)
        if codes.ndim == 0:
            return Status(int(codes)).message
        return np.vectorize(lambda c: Status(int(c)).message, otypes=[object])(codes).tolist()


jax.tree_util.register_dataclass(
    Result,
    data_fields=[f.name for f in dataclasses.fields(Result)],
    meta_fields=[],
)


@dataclasses.dataclass(frozen=True)
class _Options:
    """The static (hashable) options of a solve; part of the compilation cache key."""

    max_steps: int
    history: bool
    batch_size: int | None = None
    batch_args: tuple[int, ...] = ()  # indices into the ``args`` that ``fun`` receives
    progress: int = 0  # number of progress-bar updates over max_steps; 0: no bar
    name: str = "minimize"  # the public function, for error messages
    # How the solve is differentiated: jloss.differentiation.Implicit or Unrolled, or None.
    diff: Any = None
    # Minibatches drawn per shard of the data (jloss.sharding): D > 1 shards of N / D rows, each
    # step taking B / D rows of every shard; ``batch_sharding`` (a NamedSharding of the leading
    # axis, or None) keeps that gather on the devices that hold the rows.
    batch_shards: int = 1
    batch_sharding: Any = None


class _Carry(NamedTuple):
    """The while-loop state. Data (``args``) is deliberately absent: the body closes over it."""

    params: Any
    opt_state: Any
    value: jax.Array  # loss at ``params`` (on the current minibatch in minibatch mode)
    grad: Any  # gradient at ``params``, consumed by the next update
    step: jax.Array  # updates applied by this call
    status: jax.Array  # _RUNNING or a Status code
    history: jax.Array | None
    perm: jax.Array | None  # this epoch's permutation of the N samples (minibatch mode)


# ----------------------------------------------------------------------------------------------
# Input checks (host side, at trace time)
# ----------------------------------------------------------------------------------------------


def _is_concrete(x: Any) -> bool:
    return not isinstance(x, jax.core.Tracer)


def _check_optimizer(name: str, optimizer: Any, what: str = "optimizer") -> None:
    if isinstance(optimizer, optax.GradientTransformation):
        return
    hint = ""
    if callable(optimizer):
        hint = (
            f" It is callable: did you pass the factory instead of calling it, e.g. "
            f"optax.adam instead of optax.adam(1e-3)?"
        )
    raise TypeError(
        f"{name}: {what} must be an optax.GradientTransformation (for example optax.adam(1e-3) "
        f"or optax.lbfgs()), got an object of type {type(optimizer).__name__}.{hint}"
    )


def _check_max_steps(name: str, max_steps: Any) -> int:
    if isinstance(max_steps, (bool, np.bool_)) or not isinstance(max_steps, (int, np.integer)):
        raise TypeError(
            f"{name}: max_steps must be a Python int (it fixes the history shape), "
            f"got {max_steps!r} of type {type(max_steps).__name__}."
        )
    if max_steps < 1:
        raise ValueError(f"{name}: max_steps must be >= 1, got {max_steps}.")
    return int(max_steps)


def _check_tol(name: str, tol: Any) -> Any:
    if isinstance(tol, (bool, np.bool_)):
        raise TypeError(f"{name}: tol must be a real number, got {tol!r}.")
    arr = np.asarray(tol) if _is_concrete(tol) and not isinstance(tol, jax.Array) else tol
    if arr.shape != ():
        raise ValueError(f"{name}: tol must be a scalar, got shape {tuple(arr.shape)}.")
    if not (jnp.issubdtype(arr.dtype, jnp.floating) or jnp.issubdtype(arr.dtype, jnp.integer)):
        raise TypeError(f"{name}: tol must be a real number, got dtype {arr.dtype}.")
    if _is_concrete(tol):
        value = float(np.asarray(tol))
        if not np.isfinite(value) or value < 0:
            raise ValueError(f"{name}: tol must be a finite number >= 0, got {value}.")
    return tol


def _check_args(name: str, args: Any) -> tuple:
    if not isinstance(args, tuple):
        raise TypeError(
            f"{name}: args must be a tuple of the extra positional arguments of fun, got "
            f"{type(args).__name__}; for a single argument write args=(x,)."
        )
    return args


def _prepare_params(name: str, params: Any) -> Any:
    """Arrays with a floating dtype (no weak types, so the loop carry keeps a fixed type)."""
    leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
    if not leaves:
        raise ValueError(f"{name}: init_params has no array leaves; there is nothing to minimize.")
    out = []
    for path, leaf in leaves:
        if leaf is None or isinstance(leaf, (str, bytes)):
            raise TypeError(
                f"{name}: parameter leaf at init_params{jax.tree_util.keystr(path)} is "
                f"{leaf!r}; every leaf must be a floating array."
            )
        arr = leaf if hasattr(leaf, "dtype") else np.asarray(leaf)
        if not jnp.issubdtype(arr.dtype, jnp.floating):
            raise TypeError(
                f"{name}: parameter leaf at init_params{jax.tree_util.keystr(path)} has dtype "
                f"{arr.dtype} (shape {tuple(arr.shape)}); parameters must be floating, e.g. "
                f"jnp.asarray(x, jnp.float32)."
            )
        out.append(lax.convert_element_type(arr, arr.dtype) if _is_weak(leaf) else leaf)
    return jax.tree_util.tree_unflatten(treedef, [x for x in out])


def _check_progress(name: str, progress: Any) -> int:
    """``progress`` as the most bar updates: False -> 0, True -> 100 (at most every 1%)."""
    if isinstance(progress, (bool, np.bool_)):
        updates = 100 if progress else 0
    elif isinstance(progress, (int, np.integer)) and progress >= 1:
        updates = int(progress)
    else:
        raise TypeError(
            f"{name}: progress must be True, False or a number of bar updates >= 1, "
            f"got {progress!r}."
        )
    if updates:
        _import_tqdm(name)
    return updates


def _progress_every(options: _Options) -> int:
    """Steps between two progress callbacks."""
    return max(1, -(-options.max_steps // options.progress))


def _import_tqdm(name: str = "minimize"):
    try:
        from tqdm.auto import tqdm
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            f"{name}(progress=True) needs tqdm, which is not installed. Install it with "
            "`pip install jloss[progress]` (or `pip install tqdm`)."
        ) from err
    return tqdm


def _resolve_batching(
    name: str,
    args: tuple,
    batch_size: Any,
    batch_args: Any,
    key: Any,
    *,
    shift: int = 0,
) -> tuple[int | None, tuple[int, ...], Any]:
    """Validate the minibatch options; returns (batch_size, batch_args shifted by ``shift``, key).

    ``shift`` is the number of leading arguments that the solve passes to ``fun`` before the
    user's ``args`` (1 in a sweep, for the hyperparameter).
    """
    if batch_size is None:
        if batch_args is not None:
            raise ValueError(
                f"{name}: batch_args is only used with batch_size; pass batch_size too."
            )
        return None, (), None
    if isinstance(batch_size, (bool, np.bool_)) or not isinstance(batch_size, (int, np.integer)):
        raise TypeError(f"{name}: batch_size must be a Python int or None, got {batch_size!r}.")
    if batch_size < 1:
        raise ValueError(f"{name}: batch_size must be >= 1, got {batch_size}.")
    if key is None:
        raise ValueError(
            f"{name}: batch_size={batch_size} needs a PRNG key for the shuffles, e.g. "
            "key=jax.random.key(0)."
        )
    if batch_args is None:
        batch_args = tuple(range(len(args)))
        source = "every argument in args (the default; choose others with batch_args=)"
    else:
        if isinstance(batch_args, (int, np.integer)):
            batch_args = (batch_args,)
        batch_args = tuple(batch_args)
        for i in batch_args:
            is_index = isinstance(i, (int, np.integer)) and not isinstance(i, bool)
            if not is_index or not 0 <= i < len(args):
                raise ValueError(
                    f"{name}: batch_args={batch_args} must hold indices into args "
                    f"(0..{len(args) - 1})."
                )
        batch_args = tuple(sorted(set(int(i) for i in batch_args)))
        source = f"args{list(batch_args)}"
    if not batch_args:
        raise ValueError(f"{name}: batch_size={batch_size} but there is no data argument to slice.")
    n, first = checks.leading_size(
        [item for i in batch_args for item in checks.labelled_leaves(f"args[{i}]", args[i])],
        lambda where: (
            f"{name}: minibatch mode slices {source} along a leading axis, but {where} "
            "is a scalar. Leave it out with batch_args=(indices of the data arguments)."
        ),
        lambda first, n, where, m: (
            f"{name}: minibatch mode slices {source} along their leading axis, which must "
            f"be the same N for all of them: {first} has {n} rows but {where} has "
            f"{m}. Pass batch_args= to name the data arguments."
        ),
    )
    if n is None:
        raise ValueError(f"{name}: batch_size={batch_size} but {source} hold no arrays.")
    if batch_size > n:
        raise ValueError(
            f"{name}: batch_size={batch_size} is larger than the number of samples N={n} "
            f"(leading axis of {first})."
        )
    return int(batch_size), tuple(i + shift for i in batch_args), key


def _resolve_init(name: str, init: Any, params: Any) -> tuple[Any, Any, Any]:
    """Returns (params0, opt_state0 or None, offset) for a warm start."""
    if init is None:
        if params is None:
            raise ValueError(f"{name}: init_params is None; pass parameters or init=result.")
        return params, None, np.zeros((), np.int32)
    if isinstance(init, Result):
        if params is not None:
            raise ValueError(
                f"{name}: init is a Result, which continues from its own params; pass "
                "init_params=None. (To start other params from its optimizer state, pass "
                "init=result.opt_state.)"
            )
        return init.params, init.opt_state, init.total_steps
    if params is None:
        raise ValueError(
            f"{name}: init is an optimizer state, so init_params must be given; pass "
            "init=result (a Result) to continue from its params."
        )
    return params, init, np.zeros((), np.int32)


# ----------------------------------------------------------------------------------------------
# The solve
# ----------------------------------------------------------------------------------------------


def _check_fun_output(name: str, fun: Callable, params: Any, args: tuple) -> None:
    out = jax.eval_shape(fun, params, *args)
    if not isinstance(out, jax.ShapeDtypeStruct) or out.shape != ():
        shape = getattr(out, "shape", None)
        if shape is not None:
            what = f"an array of shape {tuple(shape)}"
        else:
            what = f"a {type(out).__name__}"
        raise ValueError(
            f"{name}: fun must return a scalar loss (shape ()), but it returned {what}. "
            "Reduce it, e.g. with jnp.mean or reduction='mean'."
        )
    if not jnp.issubdtype(out.dtype, jnp.floating):
        raise TypeError(f"{name}: fun must return a floating scalar, got dtype {out.dtype}.")


def _all_finite(tree: Any) -> jax.Array:
    leaves = jax.tree_util.tree_leaves(tree)
    return functools.reduce(
        jnp.logical_and, [jnp.all(jnp.isfinite(x)) for x in leaves], jnp.asarray(True)
    )


def _finite_and_sq_norm(params: Any, grad: Any) -> tuple[jax.Array, jax.Array]:
    """(every leaf of ``params`` and ``grad`` finite, squared norm of ``grad``): one fused
    reduction per leaf (``0 * x`` is 0 for a finite x and NaN otherwise, without overflow)."""
    bad, sq = [], []
    for p, g in zip(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(grad)):
        g = jnp.asarray(g)
        flag = jnp.zeros_like(g) * p + jnp.zeros_like(g) * g
        if g.ndim == 0:
            b, s = flag, g * g
        else:
            zero = jnp.zeros((), g.dtype)
            b, s = lax.reduce((flag, g * g), (zero, zero), lambda a, c: (a[0] + c[0], a[1] + c[1]), tuple(range(g.ndim)))
        bad.append(b)
        sq.append(s)
    if not sq:
        return jnp.asarray(True), jnp.zeros((), jnp.float32)
    return jnp.isfinite(functools.reduce(jnp.add, bad)), functools.reduce(jnp.add, sq)


def _is_key(x: Any) -> bool:
    return jax.dtypes.issubdtype(jnp.result_type(x), jax.dtypes.prng_key)


def _is_weak(x: Any) -> bool:
    if isinstance(x, (bool, int, float, complex)):
        return True
    if isinstance(x, (jax.Array, jax.core.Tracer)):
        return jax.typeof(x).weak_type
    return False  # NumPy arrays and scalars are strongly typed


def _select(pred: jax.Array, new: Any, old: Any) -> Any:
    """``new`` where ``pred`` else ``old``, leaf by leaf, keeping the types of ``old``."""

    def select(a, b):
        if _is_key(b):
            return jax.random.wrap_key_data(
                jnp.where(pred, jax.random.key_data(a), jax.random.key_data(b)),
                impl=jax.random.key_impl(b),
            )
        return lax.convert_element_type(jnp.where(pred, a, b), jnp.result_type(b))

    return jax.tree_util.tree_map(select, new, old)


def _as_float(x: Any) -> Any:
    """A scalar as a strongly typed value of the default float dtype (one cache key for all
    tols; a NumPy scalar for a concrete value, so no device dispatch)."""
    if _is_concrete(x) and not isinstance(x, jax.Array):
        return np.asarray(x, dtype=jnp.result_type(float))
    return lax.convert_element_type(x, jnp.result_type(float))


def _strong(tree: Any) -> Any:
    """The same values without weak types, so that the loop carry keeps one fixed type (only
    weakly typed leaves are converted: no device dispatch for the others)."""
    return jax.tree_util.tree_map(
        lambda x: lax.convert_element_type(x, jnp.result_type(x)) if _is_weak(x) else x, tree
    )


@functools.partial(jax.jit, static_argnums=0)
def _init_state(optimizer: optax.GradientTransformation, params: Any) -> Any:
    """``optimizer.init(params)`` in one dispatch, strongly typed."""
    return jax.tree_util.tree_map(
        lambda x: x if _is_key(x) else lax.convert_element_type(x, jnp.result_type(x)),
        optimizer.init(params),
    )


def _finds_value_and_grad(opt_state: Any) -> bool:
    """True if the state stores the loss and gradient at the new params (optax line searches)."""
    try:
        value = optax.tree.get(opt_state, "value")
        grad = optax.tree.get(opt_state, "grad")
    except (KeyError, ValueError, TypeError):
        return False
    return value is not None and grad is not None and jnp.shape(value) == ()


class _Solver:
    """One minimization problem, split into ``init``/``step``/``finish`` so that loops can be
    built around it: :func:`_solve` runs ``step`` in a ``lax.while_loop``; ``jloss.sweep`` runs a
    vmapped ``step`` inside its own loop (with an unbatched iteration counter for its progress
    bar). Everything here is traceable; ``fun``/``optimizer``/``options`` are Python objects and
    ``args``/``tol``/``key``/``offset`` are loop-invariant arrays (closed over by ``step``, never
    part of the carry).
    """

    def __init__(self, fun, optimizer, options: _Options, args: tuple, tol, key, offset):
        self.fun = fun
        self.optimizer = optimizer
        self.options = options
        self.args = args
        self.tol = jnp.asarray(tol)
        self.key = key
        self.offset = jnp.asarray(offset, jnp.int32)
        self.minibatch = options.batch_size is not None
        self.extra_args = isinstance(optimizer, optax.GradientTransformationExtraArgs)
        if self.minibatch:
            data = args[options.batch_args[0]]
            self.n = jax.tree_util.tree_leaves(data)[0].shape[0]
            # D shards of n // D rows, each giving batch_size // D rows per step (D = 1 unsharded).
            self.shards = options.batch_shards
            # An epoch is n // batch_size steps; the last partial batch of each epoch is dropped.
            self.n_batches = (self.n // self.shards) // (options.batch_size // self.shards)

    # -- minibatch schedule -------------------------------------------------------------------

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

    def on_shards(self, x, split: bool):
        """``x`` constrained to the data's devices: axis 0 over the data axis (``split``: axis 0
        is the shard, axis 1 a shard's rows); no-op without a ``batch_sharding``."""
        sharding = self.options.batch_sharding
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

    def batch_args(self, perm, t):
        """The arguments of ``fun`` at global step ``t`` (the whole ``args`` in full-batch mode)."""
        if not self.minibatch:
            return self.args
        bs = self.options.batch_size // self.shards  # rows per shard
        idx = lax.dynamic_slice_in_dim(perm, (t % self.n_batches) * bs, bs, axis=perm.ndim - 1)
        return tuple(
            jax.tree_util.tree_map(lambda x: self.take_batch(x, idx), a)
            if i in self.options.batch_args
            else a
            for i, a in enumerate(self.args)
        )

    # -- evaluation and status ------------------------------------------------------------------

    def reuses_state(self, state) -> bool:
        """True if the loss and gradient at new params can be read from the optimizer state.

        optax.lbfgs (and any line search storing value and grad) already evaluated them at the new
        params. Full-batch only: in minibatch mode the next step's batch differs from the one the
        line search used.
        """
        return self.extra_args and not self.minibatch and _finds_value_and_grad(state)

    def value_and_grad(self, params, state, fargs):
        if self.reuses_state(state):
            vg = optax.value_and_grad_from_state(lambda p: self.fun(p, *fargs))
            value, grad = vg(params, state=state)
        else:
            value, grad = jax.value_and_grad(self.fun)(params, *fargs)
        return _strong(value), _strong(grad)

    def status_of(self, finite, grad_norm, step):
        # tol = 0 disables the gradient test: exactly max_steps steps.
        converged = (self.tol > 0) & (grad_norm <= self.tol)
        return jnp.where(
            ~finite,
            Status.NONFINITE,
            jnp.where(
                converged,
                Status.CONVERGED,
                jnp.where(step >= self.options.max_steps, Status.MAX_STEPS, _RUNNING),
            ),
        ).astype(jnp.int32)

    # -- the loop pieces ------------------------------------------------------------------------

    def init(self, params0, opt_state0) -> _Carry:
        options = self.options
        _check_fun_output(options.name, self.fun, params0, _example_batch(self.args, options))
        state = self.optimizer.init(params0) if opt_state0 is None else opt_state0
        state = _strong(state)
        perm = self.epoch_perm(self.offset) if self.minibatch else None
        value, grad = self.value_and_grad(params0, state, self.batch_args(perm, self.offset))
        finite = jnp.isfinite(value) & _all_finite(grad) & _all_finite(params0)
        step = jnp.zeros((), jnp.int32)
        history = jnp.full((options.max_steps,), jnp.nan, value.dtype) if options.history else None
        return _Carry(
            params=params0,
            opt_state=state,
            value=value,
            grad=grad,
            step=step,
            status=self.status_of(finite, optax.tree.norm(grad), step),
            history=history,
            perm=perm,
        )

    def step(self, c: _Carry, guard: Any = "full", perm: Any = None, next_perm: Any = None) -> _Carry:
        """One update and the evaluation at the new params.

        In minibatch mode the step reads this epoch's permutation from ``c.perm`` and takes the
        next step's from a ``lax.cond`` (a new one at an epoch boundary), unless the caller knows
        both: ``perm`` (then ``c.perm`` may be None) and ``next_perm`` (default: ``perm``), as
        :meth:`run_epochs` does, which spares every step the cond's copy of the permutation.

        ``guard="full"``: a no-op for a stopped member, and a non-finite candidate is not accepted
        (the carry keeps the last good state). That costs a select per leaf of params and
        optimizer state every step, which a loop that runs only while ``status`` is running does
        not need: with ``guard=None`` the candidate is always taken, a non-finite one stops the
        loop with status NONFINITE, and :meth:`recover` restores the last good state afterwards.
        ``guard="stopped"`` (``jloss.sweep``'s batched loop) freezes stopped members only and
        leaves non-finite candidates to :meth:`recover` as well.
        """
        running = c.status == _RUNNING
        t = self.offset + c.step
        known = perm is not None
        perm = perm if known else c.perm
        fargs = self.batch_args(perm, t)
        if self.extra_args:
            updates, state1 = self.optimizer.update(
                c.grad,
                c.opt_state,
                c.params,
                value=c.value,
                grad=c.grad,
                value_fn=lambda p: self.fun(p, *fargs),
            )
        else:
            updates, state1 = self.optimizer.update(c.grad, c.opt_state, c.params)
        params1 = optax.apply_updates(c.params, updates)
        if self.minibatch:
            t1 = t + 1
            if known:
                perm1 = perm if next_perm is None else next_perm
            else:
                perm1 = lax.cond(
                    (t1 % self.n_batches == 0) & self.more_steps(c),
                    lambda: self.epoch_perm(t1),
                    lambda: perm,
                )
        else:
            t1, perm1 = t + 1, None
        value1, grad1 = self.value_and_grad(params1, state1, self.batch_args(perm1, t1))
        leaves_finite, sq_norm = _finite_and_sq_norm(params1, grad1)
        finite = jnp.isfinite(value1) & leaves_finite
        step1 = c.step + 1
        status1 = self.status_of(finite, jnp.sqrt(sq_norm), step1)
        history = c.history
        if guard is None:
            if history is not None:
                entry = jnp.where(finite, value1, jnp.nan).astype(history.dtype)
                history = lax.dynamic_update_index_in_dim(history, entry, c.step, 0)
            return _Carry(params1, state1, value1, grad1, step1, status1, history, None if known else perm1)
        # A stopped member (under vmap) changes nothing, nor (guard="full") does a non-finite
        # candidate. guard="stopped" takes non-finite candidates (they stop the member, and
        # recover() restores its last good state): the select then depends on the status at the
        # start of the step only, so XLA fuses it into the update instead of a pass of its own.
        accept = running if guard == "stopped" else running & finite
        status = jnp.where(running, status1, c.status)
        if history is not None:
            i = jnp.minimum(c.step, self.options.max_steps - 1)
            entry = jnp.where(running & finite, value1, jnp.nan)
            entry = jnp.where(running, entry, history[i]).astype(history.dtype)
            history = lax.dynamic_update_index_in_dim(history, entry, i, 0)
        return _Carry(
            params=_select(accept, params1, c.params),
            opt_state=_select(accept, state1, c.opt_state),
            value=_select(accept, value1, c.value),
            grad=_select(accept, grad1, c.grad),
            step=jnp.where(accept, step1, c.step),
            status=status,
            history=history,
            perm=_select(accept, perm1, c.perm) if self.minibatch else None,
        )

    def more_steps(self, c: _Carry) -> jax.Array:
        """Whether a step after the one ``c`` is about to take can run. The last step's
        evaluation only feeds the finiteness check (``finish`` reports the full-data loss), so
        it reuses this epoch's permutation rather than drawing one (a sort of N keys: 80 ms for
        N = 100,000 on CPU) for an epoch that never starts."""
        return c.step + 1 < self.options.max_steps

    def run_epochs(self, c: _Carry) -> _Carry:
        """The unguarded minibatch loop, nested: epochs outside, steps inside.

        The inner loop closes over the epoch's permutation instead of carrying it, and only the
        epoch's last step (whose evaluation uses the next epoch's first batch) draws a new one,
        once per epoch; the carry's ``perm`` is the current epoch's between epochs.
        """

        def in_epoch(ci):  # the next step's batch is still in this epoch
            return (ci.status == _RUNNING) & ((self.offset + ci.step + 1) % self.n_batches != 0)

        def epoch(co):
            perm = co.perm
            inner = lax.while_loop(
                in_epoch, lambda ci: self.step(ci, guard=None, perm=perm), co._replace(perm=None)
            )

            def boundary(ci):
                t1 = self.offset + ci.step + 1
                next_perm = lax.cond(self.more_steps(ci), lambda: self.epoch_perm(t1), lambda: perm)
                out = self.step(ci, guard=None, perm=perm, next_perm=next_perm)
                return out._replace(perm=next_perm)

            return lax.cond(
                inner.status == _RUNNING, boundary, lambda ci: ci._replace(perm=perm), inner
            )

        return lax.while_loop(lambda co: co.status == _RUNNING, epoch, c)

    def pairs(self, c: _Carry) -> bool:
        """Whether :meth:`run` takes two steps per loop iteration: in full-batch mode, when the
        params, optimizer state and gradient together take at most ``_PAIR_MAX_BYTES`` (the
        paired loop keeps a second copy of them)."""
        if self.minibatch or self.options.max_steps < 2:
            return False
        leaves = jax.tree_util.tree_leaves((c.params, c.opt_state, c.grad))
        size = sum(
            (8 if _is_key(x) else np.dtype(jnp.result_type(x)).itemsize) * int(np.prod(jnp.shape(x)))
            for x in leaves
        )  # a PRNG key (optax.noisy_sgd's state) is at most two uint32 words
        return size <= _PAIR_MAX_BYTES

    def run(self, c: _Carry, limit: Any = None) -> _Carry:
        """Unguarded steps while ``c`` is running (and ``c.step < limit``): the full-batch loop.

        When :meth:`pairs` allows, one loop iteration takes two steps. On XLA CPU each iteration
        of a while loop costs a few microseconds besides its thunks, and XLA shares work between
        the two steps (the step counter, the bias corrections), so a small problem runs about 5-10%
        faster. The second step of a pair runs even when the first one stopped the run
        (converged or non-finite); the loop then keeps the first step's state, which it carries
        alongside, and puts the history entry back: the result is the one-step loop's, bitwise.
        The pairs stop two steps short of ``max_steps`` (or ``limit``) and single steps finish.
        """
        n = self.options.max_steps
        end = n if limit is None else jnp.minimum(limit, n)
        running = lambda c: c.status == _RUNNING  # noqa: E731
        if self.pairs(c):

            def two_steps(state):
                c0, _, _ = state
                c1 = self.step(c0, guard=None)
                c2 = self.step(c1, guard=None)
                first_stopped = ~running(c1)
                c2 = c2._replace(status=jnp.where(first_stopped, c1.status, c2.status))
                return c2, c1._replace(history=None), first_stopped

            state = (c, c._replace(history=None), jnp.zeros((), bool))
            c2, first, first_stopped = _loop(
                self.options, lambda s: running(s[0]) & (s[0].step + 2 <= end), two_steps, state
            )
            take = lambda a, b: _select(first_stopped, a, b)  # noqa: E731
            history = c2.history
            if history is not None:  # the second step's entry, at index first.step <= n - 1
                entry = jnp.where(first_stopped, jnp.nan, history[first.step]).astype(history.dtype)
                history = lax.dynamic_update_index_in_dim(history, entry, first.step, 0)
            c = c2._replace(
                params=take(first.params, c2.params),
                opt_state=take(first.opt_state, c2.opt_state),
                value=take(first.value, c2.value),
                grad=take(first.grad, c2.grad),
                step=jnp.where(first_stopped, first.step, c2.step),
                history=history,
            )
        body = functools.partial(self.step, guard=None)
        return _loop(self.options, lambda c: running(c) & (c.step < end), body, c)

    def recover(self, start: _Carry, end: _Carry) -> _Carry:
        """The last good state of a run of unguarded steps from ``start`` that ended in ``end``.

        A run that stopped on a non-finite candidate holds that candidate. It is replayed from
        ``start`` with guarded steps up to the step before (the steps are deterministic), and
        keeps the first run's status and history. The replay is a while loop whose trip count is
        0 for a run that did not fail, so it costs nothing then; under ``jax.vmap`` only the
        failed members replay.
        """
        failed = (end.status == Status.NONFINITE) & (end.step > start.step)
        last_good = end.step - 1

        def more(c):
            return failed & (c.step < last_good) & (c.status == _RUNNING)

        replay = lax.while_loop(more, self.step, start)
        take = lambda new, old: _select(failed, new, old)
        return end._replace(
            params=take(replay.params, end.params),
            opt_state=take(replay.opt_state, end.opt_state),
            value=take(replay.value, end.value),
            grad=take(replay.grad, end.grad),
            step=jnp.where(failed, replay.step, end.step),
            perm=take(replay.perm, end.perm) if self.minibatch else None,
        )

    def finish(self, c: _Carry) -> Result:
        status = c.status
        if self.minibatch:
            # Report the full-data loss and gradient at the returned params.
            loss, grad = jax.value_and_grad(self.fun)(c.params, *self.args)
            bad = ~(jnp.isfinite(loss) & _all_finite(grad))
            status = jnp.where(bad, jnp.int32(Status.NONFINITE), status)
        else:
            loss, grad = c.value, c.grad
        return Result(
            params=c.params,
            loss=loss,
            grad_norm=optax.tree.norm(grad),
            steps=c.step,
            total_steps=self.offset + c.step,
            converged=status == Status.CONVERGED,
            status=status,
            history=c.history,
            opt_state=c.opt_state,
        )


def _solve(
    fun: Callable,
    optimizer: optax.GradientTransformation,
    options: _Options,
    params0: Any,
    args: tuple,
    opt_state0: Any,
    tol: Any,
    key: Any,
    offset: Any,
) -> Result:
    """The whole solve as one traceable function (``minimize`` is this under ``jax.jit``).

    ``fun``, ``optimizer`` and ``options`` are static; ``params0``, ``args``, ``opt_state0``
    (``None``: ``optimizer.init(params0)``), ``tol``, ``key`` (``None`` outside minibatch mode)
    and ``offset`` (int32, the ``total_steps`` already done) are arrays/pytrees of arrays.
    """
    solver = _Solver(fun, optimizer, options, args, tol, key, offset)
    start = solver.init(params0, opt_state0)
    carry = start
    # A loop that runs every step regardless of status (diff="unrolled") needs the guarded step.
    guarded = _runs_every_step(options)
    body = functools.partial(solver.step, guard="full" if guarded else None)
    running = lambda c: c.status == _RUNNING  # noqa: E731
    if options.progress:
        bar = _ProgressBar(options.max_steps, options.name, every=_progress_every(options), key=(fun, optimizer, options))
        report = lambda c, start: bar.report(c.step, running(c).astype(jnp.int32), c.status, start)  # noqa: E731
        run = None if guarded else solver.run
        carry = _loop_with_bar(options, running, lambda c: c.step, body, carry, report, run=run)
    elif solver.minibatch and not guarded:
        carry = solver.run_epochs(carry)
    else:
        carry = solver.run(carry) if not guarded else _loop(options, running, body, carry)
    if not guarded:
        carry = solver.recover(start, carry)
    return solver.finish(carry)


def _runs_every_step(options: _Options) -> bool:
    """True for a loop that runs every step whatever the status (``diff="unrolled"``'s scan): it
    needs the fully guarded step, and nothing runs after it to recover a failed run."""
    return getattr(options.diff, "runs_every_step", False)


def _example_batch(args: tuple, options: _Options) -> tuple:
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


def _loop(options: _Options, cond: Callable, body: Callable, carry: Any) -> Any:
    """The solve's loop: a ``lax.while_loop``, or what ``options.diff`` runs instead (a
    ``lax.scan`` of ``max_steps`` steps for ``diff="unrolled"``)."""
    if options.diff is None:
        return lax.while_loop(cond, body, carry)
    return options.diff.loop(cond, body, carry, options.max_steps)


def _loop_with_bar(
    options: _Options,
    running: Callable,
    count: Callable,
    body: Callable,
    carry: Any,
    report: Callable,
    run: Callable | None = None,
) -> Any:
    """:func:`_loop` with progress callbacks (``minimize``'s and ``sweep``'s bar).

    ``running(carry)`` is the loop's condition, ``count(carry)`` its (unbatched) step count and
    ``report(carry, start)`` the callback, which returns the count at which to call back next.
    The steps between two callbacks run in an inner loop (the loop without a bar plus one
    comparison in its condition) and the callback in the outer one. A loop of ``max_steps``
    steps (``diff="unrolled"``'s scan) cannot nest, so there a ``lax.cond`` guards a callback
    per step. ``run(carry, limit)``, if given, runs a chunk instead of the plain loop of
    ``body`` (minimize's :meth:`_Solver.run`, two steps per iteration).
    """
    state = (carry, report(carry, True))
    if _runs_every_step(options):

        def guarded(state):
            c, next_report = state
            c = body(c)
            next_report = lax.cond(
                (count(c) >= next_report) | ~running(c), lambda: report(c, False), lambda: next_report
            )
            return c, next_report

        return _loop(options, lambda s: running(s[0]) & _alive(s[1]), guarded, state)[0]

    def chunk(state):
        c, next_report = state
        if run is not None:
            c = run(c, next_report)
        else:
            c = _loop(options, lambda ci: running(ci) & (count(ci) < next_report), body, c)
        return c, report(c, False)

    return lax.while_loop(lambda s: running(s[0]) & _alive(s[1]), chunk, state)[0]


def _resolve_diff(name: str, diff: Any) -> Any:
    """The ``diff=`` keyword as jloss.differentiation options (ValueError for unknown ones)."""
    from jloss.differentiation import resolve_diff

    return resolve_diff(name, diff)


def _solve_differentiable(fun, optimizer, options, *arrays) -> Result:
    """``_solve`` with the derivatives that ``options.diff`` selects (jloss.differentiation)."""
    if options.diff is None:
        return _solve(fun, optimizer, options, *arrays)
    from jloss import differentiation

    return differentiation.solve(fun, optimizer, options, *arrays)


_solve_jit = jax.jit(_solve_differentiable, static_argnums=(0, 1, 2))


# ----------------------------------------------------------------------------------------------
# Progress bar (host side)
# ----------------------------------------------------------------------------------------------


#: Steps per second of each compiled solve with a progress bar, keyed like its compilation
#: (``fun``, ``optimizer``, options): measured by the bar's callbacks and by host-drawn runs.
#: Bounded (see :func:`_record_rate`): a forgotten entry only means one more run with callbacks.
_RATES: dict = {}
_MAX_RATES = 256


def _record_rate(key: Any, rate: float) -> None:
    if key not in _RATES and len(_RATES) >= _MAX_RATES:
        _RATES.pop(next(iter(_RATES)))  # the oldest entry
    _RATES[key] = rate


def _quick_on_host(fun, optimizer, options: _Options, arrays: tuple) -> bool:
    """True for an eager call (no tracers) whose solve is known to take less than the bar's
    refresh interval: such a run would only draw its final line, so the host can draw it."""
    rate = _RATES.get((fun, optimizer, options))
    if rate is None or options.max_steps >= rate * _ProgressBar.interval:
        return False
    return all(_is_concrete(x) for x in jax.tree_util.tree_leaves(arrays))


@functools.lru_cache(maxsize=256)
def _without_bar(options: _Options) -> _Options:
    """``options`` with ``progress=0`` (memoized: ``dataclasses.replace`` is not free)."""
    return dataclasses.replace(options, progress=0)


def _solve_drawn_on_host(fun, optimizer, options: _Options, arrays: tuple) -> Result:
    """The solve without callbacks (JAX's fast dispatch path, no host round trips), then the
    bar's final line drawn here: what the callbacks would have drawn for a quick run."""
    start = time.perf_counter()
    result = _solve_jit(fun, optimizer, _without_bar(options), *arrays)
    bar = _ProgressBar(options.max_steps, options.name)
    _import_tqdm(bar.desc)  # while the solve runs
    jax.block_until_ready(result)
    # np.asarray reads a CPU scalar in about 50 us; jax.device_get and int() take 0.2-0.3 ms.
    steps, status = int(np.asarray(result.steps)), int(np.asarray(result.status))
    elapsed = time.perf_counter() - start
    if steps > 0 and elapsed > 0:
        _record_rate((fun, optimizer, options), steps / elapsed)
    bar.final_line(steps, status, elapsed)
    return result


def _alive(next_report: jax.Array) -> jax.Array:
    """Always True; read by a loop's condition to keep the progress callback's result live."""
    return next_report >= 0


class _ProgressBar:
    """Host side of a loop's progress bar (tqdm), and the schedule of its callbacks.

    One object lives in each compiled program and serves every run of it. The loop calls
    :meth:`report` (a ``jax.pure_callback``) at the start, at the step it was told to, and when
    it stops; each call returns the step of the next one. A callback costs about 0.15 ms of
    host round trip on CPU, so the schedule adapts to the measured speed: at most one update
    per ``interval`` seconds (tqdm's own refresh rate) and at most one per ``every`` steps
    (``progress=N`` gives N updates over ``max_steps``). A quick solve therefore calls back
    twice (start and stop) once the speed is known (from the previous run of the same program,
    or from this run's first update), and a long one every ``every`` steps.

    The argument is one int32 array ``(step, running, status, start)`` (leading axes under
    ``jax.vmap``, one row per member): ``start`` opens a bar, ``step`` moves it, and it closes
    once ``running`` (the number of members still running) is 0; ``status`` names the final
    state of a single run (unused in a sweep, which passes -1).
    """

    interval = 0.1  # seconds between updates at most

    def __init__(
        self, total: int, desc: str = "minimize", members: int | None = None, every: int = 1, key: Any = None
    ):
        self.key = key  # the entry of _RATES this program's measured speed goes to (None: none)
        self.total = total
        self.desc = desc
        self.members = members  # K in a sweep (shown as "r/K running"), None for minimize
        self.every = max(1, int(every))
        self.bar = None
        self.pending = False  # a run has started and its bar is not made yet
        self.rate = None  # steps per second, measured
        self.t0 = self.s0 = None

    def report(self, step, running, status, start: bool) -> jax.Array:
        """The device side: call back with the packed state; returns the next step to report."""
        packed = jnp.stack([jnp.asarray(x, jnp.int32) for x in (step, running, status, jnp.int32(start))])
        # A pure_callback (an io_callback could not sit in a cond under vmap). Its result only
        # feeds the next guard, so the loop's condition must read it (see ``_alive``), or JAX's
        # while-loop DCE would drop the callback as dead code.
        return jax.pure_callback(
            self, jax.ShapeDtypeStruct((), jnp.int32), packed, vmap_method="expand_dims"
        )

    def __call__(self, packed) -> np.ndarray:
        packed = np.asarray(packed)
        rows = packed.reshape(-1, 4)
        step = int(rows[:, 0].max())
        running = int(rows[:, 1].sum())
        status = int(rows[0, 2])
        start = bool(rows[:, 3].any())
        now = time.perf_counter()
        if start or self.t0 is None:
            self.t0, self.s0 = now, step
        elif step > self.s0 and now > self.t0:
            self.rate = (step - self.s0) / (now - self.t0)
            if self.key is not None:
                _record_rate(self.key, self.rate)
        self._draw(step, running, status, start)
        gap = self.every
        if self.rate is not None:
            gap = max(gap, int(self.rate * self.interval))
        return np.full(packed.shape[:-1], min(step + gap, np.iinfo(np.int32).max), np.int32)

    def final_line(self, steps: int, status: int, elapsed: float) -> None:
        """Write the line a closed bar leaves behind, for a run of ``steps`` steps that took
        ``elapsed`` seconds, with tqdm's own formatter (0.1 ms; a tqdm object costs 0.5 ms to
        make and close)."""
        tqdm = _import_tqdm(self.desc)
        out = sys.stderr
        ncols = shutil.get_terminal_size().columns if out.isatty() else None
        postfix = Status(status).name.lower()
        line = tqdm.format_meter(steps, self.total, elapsed, ncols=ncols, prefix=self.desc, unit="step", postfix=postfix)
        out.write("\r" + line + "\n")
        out.flush()

    def _draw(self, step: int, running: int, status: int, start: bool) -> None:
        # The bar is made at the first update after the start (or at the end), not at the start
        # itself: a quick run then pays for one drawing only, its final line.
        if start:
            if self.bar is not None and self.bar.n > 0:
                self.bar.close()
                self.bar = None
            self.pending = True
            return
        if self.bar is None:
            if not self.pending:
                return
            tqdm = _import_tqdm(self.desc)
            # Drawn from ``interval`` seconds into the run (tqdm's delay); the clock starts at the
            # start callback, so the rate it shows is the run's.
            self.bar = tqdm(total=self.total, desc=self.desc, unit="step", leave=True, delay=self.interval)
            self.bar.start_t = self.bar.last_print_t = self.bar._time() - (time.perf_counter() - self.t0)
            self.pending = False
        bar = self.bar
        if self.members is not None and running > 0:
            bar.set_postfix_str(f"{running}/{self.members} running", refresh=False)
        if step > bar.n:
            bar.update(step - bar.n)
        if running == 0:
            final = Status(status).name.lower() if status >= 0 else "done"
            bar.set_postfix_str(final, refresh=False)
            bar.delay = 0  # tqdm skips the closing line of a bar never drawn; draw it once
            bar.close()
            self.bar = None


# ----------------------------------------------------------------------------------------------
# Public entry point
# ----------------------------------------------------------------------------------------------


def minimize(
    fun: Callable[..., jax.Array],
    init_params: Any,
    optimizer: optax.GradientTransformation,
    *,
    args: tuple = (),
    max_steps: int = 1000,
    tol: float = 0.0,
    history: bool = True,
    batch_size: int | None = None,
    batch_args: tuple[int, ...] | None = None,
    key: Any = None,
    init: Any = None,
    progress: bool | int = False,
    diff: Any = "implicit",
) -> Result:
    """Minimize ``fun(params, *args)`` with an Optax optimizer in one compiled ``lax.while_loop``.

    Args:
      fun: ``fun(params, *args) -> scalar`` loss; must be differentiable w.r.t. ``params``.
      init_params: starting parameters, any pytree of floating arrays; ``None`` when ``init``
        is a :class:`Result` (which continues from its own ``params``).
      optimizer: any ``optax.GradientTransformation``. Transformations with extra arguments
        (``optax.lbfgs()``, line searches, ``optax.contrib.reduce_on_plateau``) receive
        ``value=``, ``grad=`` and ``value_fn=`` as optax documents; a line search's stored loss
        and gradient at the new params are reused (``optax.value_and_grad_from_state``) instead
        of being computed again. Build the optimizer once and reuse the object: it is part of
        the compilation cache key, compared by identity.
      args: tuple of extra positional arguments of ``fun`` (data, hyperparameters). They are
        loop-invariant inputs of the compiled program, not part of its loop state.
      max_steps: maximum number of optimizer updates (a Python int >= 1).
      tol: stopping tolerance on the global L2 norm of the gradient (see below); ``0`` disables
        the test. May be a traced scalar.
      history: record the loss after every update (``Result.history``).
      batch_size: minibatch mode (see below); ``None`` (default) uses all data every step.
      batch_args: in minibatch mode, the indices of the ``args`` that are data, sliced along
        their leading axis. Default: all of ``args``. Every array leaf of these arguments must
        have the same leading size N; the other arguments are passed whole.
      key: PRNG key for the minibatch shuffles; required with ``batch_size``, unused otherwise.
      init: warm start. A previous :class:`Result` (with ``init_params=None``) continues
        exactly where it stopped: its ``params``, ``opt_state`` and minibatch position are
        taken over, so two runs of 500 steps equal one run of 1000, bitwise. Any other value is
        used as the optimizer state for ``init_params`` (the minibatch schedule then restarts
        at epoch 0). Cold and warm starts share one compiled program.
      progress: draw a tqdm progress bar (``pip install jloss[progress]``), fed from the compiled
        loop by a host callback at most every 1% of ``max_steps`` (an int ``n``: at most ``n``
        updates) and at most every 0.1 s: the steps between two callbacks run in an inner loop,
        and each callback returns the step of the next one from the measured speed, so a quick
        solve calls back only at its start and end and draws only its final line. Once a solve
        is known to take less than 0.1 s (the speed measured on an earlier call of the same
        program), an eager call runs it without callbacks and draws that final line from the
        host: JAX dispatches programs with host callbacks through a slower path (about 1-3 ms
        per call on CPU). Off, nothing is traced. Under your own ``jax.vmap`` the members share
        each callback; ``jloss.sweep`` draws one bar for all its members.
      diff: how derivatives w.r.t. ``args`` are computed (:mod:`jloss.differentiation`):
        ``"implicit"`` (default), ``"unrolled"``, ``None``, or ``Implicit(ridge=..., solver_tol=...,
        solver_maxiter=...)`` / ``Unrolled(checkpoint=True)`` for options. See Gradients below.

    Stopping rule. Each step applies one update and evaluates the loss and gradient at the new
    params; the run stops, checked in this order, when

    1. the new loss, gradient or params are not all finite: the step is rejected, the previous
       params (and their loss and optimizer state) are returned, status ``NONFINITE``;
    2. ``tol > 0`` and the gradient norm at the new params is ``<= tol``: status ``CONVERGED``;
    3. ``max_steps`` updates were applied: status ``MAX_STEPS``.

    The starting point is checked the same way (status ``NONFINITE`` or ``CONVERGED`` with
    ``steps == 0``). Under ``jax.vmap`` every member stops on its own criterion and a stopped
    member no longer changes while the others go on.

    Minibatch mode (``batch_size=B``): the N samples are shuffled once per epoch with
    ``jax.random.permutation(jax.random.fold_in(key, epoch), N)`` and each step reads the next
    B indices of that permutation (``lax.dynamic_slice``) and gathers those rows of the data
    arguments inside the loop; an epoch is ``N // B`` steps and the last ``N % B`` samples of each
    permutation are dropped (a different subset every epoch), so every batch has exactly B rows.
    ``fun`` sees the batch, so a mean-reduced loss is an unbiased estimate of the full loss.
    ``tol`` is then compared with the *minibatch* gradient norm (noisy; the default ``tol=0``
    runs ``max_steps`` steps), ``history`` holds minibatch losses, and ``loss``/``grad_norm``
    of the result are evaluated on the full data at the returned params.

    Sharded data (``jloss.sharding.shard_data``): data whose leading axis is sharded over D
    devices stays where it is; params are replicated and only the gradient is summed across
    devices. In minibatch mode each step then takes ``B / D`` rows from every device's own rows
    (one permutation per shard and epoch, see :mod:`jloss.sharding`; ``B`` must be a multiple of
    D), so no data crosses devices; the sharding is read from the arrays passed here (not from
    tracers, so call ``minimize`` itself rather than under your own ``jax.jit``).

    Returns:
      a :class:`Result` (see its fields). ``result.message`` gives the status as text.

    Gradients: ``jax.grad``, ``jax.vjp``, ``jax.jvp``, ``jax.jacfwd``/``jacrev`` of the result
    (``params`` and ``loss``) w.r.t. anything in ``args`` (data, hyperparameters) work, also under
    ``jax.jit`` and ``jax.vmap``. With ``diff="implicit"`` (default) they come from the implicit
    function theorem at the returned params (one extra conjugate-gradient solve with
    Hessian-vector products; exact at a converged, strictly convex solution; ``loss`` by the
    envelope theorem; no cost unless a derivative is taken). With ``diff="unrolled"`` the loop is a
    ``lax.scan`` of ``max_steps`` steps and the derivative is that of the steps taken (for runs
    that are not converged; reverse mode stores every step). Other fields, and ``init_params``,
    ``tol``, ``key``, have zero derivatives under ``"implicit"``. Details and the assumptions:
    :mod:`jloss.differentiation`.

    Composes with ``jax.jit`` and ``jax.vmap``; calling again with new arrays of the same shapes
    and dtypes (and the same ``fun``/``optimizer`` objects and options) does not recompile.

    >>> import jax.numpy as jnp, optax
    >>> from jloss.minimize import minimize
    >>> fun = lambda w, target: jnp.sum((w - target) ** 2)
    >>> res = minimize(fun, jnp.zeros(2), optax.sgd(0.1), args=(jnp.array([1.0, -2.0]),), tol=1e-4)
    >>> res.message, int(res.steps), res.params.round(3).tolist()
    ('converged: gradient norm <= tol', 48, [1.0, -2.0])
    """
    name = "minimize"
    if not callable(fun):
        raise TypeError(f"{name}: fun must be callable, got {type(fun).__name__}.")
    _check_optimizer(name, optimizer)
    max_steps = _check_max_steps(name, max_steps)
    tol = _check_tol(name, tol)
    if not isinstance(history, (bool, np.bool_)):
        raise TypeError(f"{name}: history must be True or False, got {history!r}.")
    args = _check_args(name, args)
    progress = _check_progress(name, progress)
    batch_size, batch_args, key = _resolve_batching(name, args, batch_size, batch_args, key)
    params0, opt_state0, offset = _resolve_init(name, init, init_params)
    params0 = _prepare_params(name, params0)
    # The optimizer state is built here rather than inside the compiled solve, so that a cold
    # start and a warm start (init=result) share one compiled program.
    opt_state0 = _init_state(optimizer, params0) if opt_state0 is None else _strong(opt_state0)
    tol = _as_float(tol)
    options = _Options(
        max_steps=max_steps,
        history=bool(history),
        batch_size=batch_size,
        batch_args=batch_args,
        progress=progress,
        diff=_resolve_diff(name, diff),
        **_minibatch_options(name, args, batch_size, batch_args),
    )
    arrays = (params0, args, opt_state0, tol, key, offset)
    if progress and _quick_on_host(fun, optimizer, options, arrays):
        return _solve_drawn_on_host(fun, optimizer, options, arrays)
    return _solve_jit(fun, optimizer, options, *arrays)
