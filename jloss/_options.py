"""The static options of a solve and the host-side checks of ``minimize`` and ``sweep``.

:class:`Options` is the part of a solve that is a Python object (part of the compilation cache
key); the ``check_*``/``resolve_*`` functions validate the public keywords on the host, at trace
time, with messages that name the public function.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from jloss import checks
from jloss._progress import import_tqdm
from jloss._result import Result
from jloss._tree import is_weak
from jloss.checks import is_concrete

__all__ = [
    "Options",
    "check_fun",
    "check_optimizer",
    "member_optimizer",
    "check_max_steps",
    "check_tol",
    "check_history",
    "check_args",
    "prepare_params",
    "check_progress",
    "resolve_batching",
    "resolve_init",
    "check_fun_output",
    "grid_size",
]


@dataclasses.dataclass(frozen=True)
class Options:
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

    @property
    def runs_every_step(self) -> bool:
        """True for a loop that runs every step whatever the status (``diff="unrolled"``'s
        scan): it needs the fully guarded step, and nothing runs after it to recover a failed
        run."""
        return self.diff is not None and self.diff.runs_every_step

    @property
    def minibatch(self) -> bool:
        return self.batch_size is not None


def check_fun(name: str, fun: Any) -> None:
    if not callable(fun):
        raise TypeError(f"{name}: fun must be callable, got {type(fun).__name__}.")


def check_history(name: str, history: Any) -> bool:
    if not isinstance(history, (bool, np.bool_)):
        raise TypeError(f"{name}: history must be True or False, got {history!r}.")
    return bool(history)


def check_optimizer(name: str, optimizer: Any, what: str = "optimizer") -> None:
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


def member_optimizer(name: str, optimizer: Any, h: Any) -> optax.GradientTransformation:
    """The optimizer of a sweep's member ``h``: ``optimizer`` itself or ``optimizer(h)``."""
    if isinstance(optimizer, optax.GradientTransformation):
        return optimizer
    opt = optimizer(h)
    check_optimizer(name, opt, what="the optimizer factory's result optimizer(h)")
    return opt


def check_max_steps(name: str, max_steps: Any) -> int:
    if isinstance(max_steps, (bool, np.bool_)) or not isinstance(max_steps, (int, np.integer)):
        raise TypeError(
            f"{name}: max_steps must be a Python int (it fixes the history shape), "
            f"got {max_steps!r} of type {type(max_steps).__name__}."
        )
    if max_steps < 1:
        raise ValueError(f"{name}: max_steps must be >= 1, got {max_steps}.")
    return int(max_steps)


def check_tol(name: str, tol: Any) -> Any:
    if isinstance(tol, (bool, np.bool_)):
        raise TypeError(f"{name}: tol must be a real number, got {tol!r}.")
    arr = np.asarray(tol) if is_concrete(tol) and not isinstance(tol, jax.Array) else tol
    if arr.shape != ():
        raise ValueError(f"{name}: tol must be a scalar, got shape {tuple(arr.shape)}.")
    if not (jnp.issubdtype(arr.dtype, jnp.floating) or jnp.issubdtype(arr.dtype, jnp.integer)):
        raise TypeError(f"{name}: tol must be a real number, got dtype {arr.dtype}.")
    if is_concrete(tol):
        value = float(np.asarray(tol))
        if not np.isfinite(value) or value < 0:
            raise ValueError(f"{name}: tol must be a finite number >= 0, got {value}.")
    return tol


def check_args(name: str, args: Any) -> tuple:
    if not isinstance(args, tuple):
        raise TypeError(
            f"{name}: args must be a tuple of the extra positional arguments of fun, got "
            f"{type(args).__name__}; for a single argument write args=(x,)."
        )
    return args


def prepare_params(name: str, params: Any) -> Any:
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
        out.append(lax.convert_element_type(arr, arr.dtype) if is_weak(leaf) else leaf)
    return jax.tree_util.tree_unflatten(treedef, [x for x in out])


def check_progress(name: str, progress: Any) -> int:
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
        import_tqdm(name)
    return updates


def resolve_batching(
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


def resolve_init(name: str, init: Any, params: Any) -> tuple[Any, Any, Any]:
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


def check_fun_output(name: str, fun: Callable, params: Any, args: tuple) -> None:
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


def grid_size(name: str, grid: Any) -> int:
    leaves = jax.tree_util.tree_leaves_with_path(grid)
    if not leaves:
        raise ValueError(
            f"{name}: grid is empty; pass an array with a leading axis K or a dict of them."
        )
    k, _ = checks.leading_size(
        checks.labelled_leaves("grid", grid),
        lambda where: (
            f"{name}: every grid leaf must be an array with a leading axis K (one entry per "
            f"member), but {where} is a scalar. (A Python list of numbers is a pytree of "
            "scalars: wrap it, e.g. jnp.array([0.1, 1.0, 10.0]).)"
        ),
        lambda first, k, where, m: (
            f"{name}: grid leaves must share their leading axis K: {first} has {k} entries "
            f"but {where} has {m}."
        ),
    )
    if k == 0:
        raise ValueError(f"{name}: grid has K = 0 members.")
    return int(k)


