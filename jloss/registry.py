"""The loss registry: look losses up by name, list them, and read what they are.

>>> import jloss
>>> jloss.get("huber") is jloss.huber
True
>>> "mae" in jloss.available()
True
"""

from __future__ import annotations

import dataclasses
from typing import Callable

from jloss import classification, regression


@dataclasses.dataclass(frozen=True)
class LossInfo:
    """What the CLI and plots need to know about a registered loss.

    ``kind`` is ``"regression"`` (a function of the residual r = prediction - target),
    ``"binary"`` (of the margin y*s, labels in {-1,+1} or {0,1}) or ``"multiclass"``.
    ``hyperparameter`` is the name of its one hyperparameter argument (or None) and ``default``
    its default value.
    """

    name: str
    fn: Callable
    kind: str
    formula: str
    hyperparameter: str | None = None
    default: float | None = None


_REGISTRY: dict[str, LossInfo] = {}


def register(info: LossInfo) -> LossInfo:
    """Register a loss under ``info.name`` (a ValueError if the name is taken)."""
    if info.name in _REGISTRY:
        raise ValueError(f"a loss named {info.name!r} is already registered")
    _REGISTRY[info.name] = info
    return info


def available() -> tuple[str, ...]:
    """The names of all registered losses, sorted."""
    return tuple(sorted(_REGISTRY))


def info(name: str) -> LossInfo:
    """The :class:`LossInfo` of a registered loss; ValueError listing known names otherwise."""
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown loss {name!r}; known losses: {', '.join(available())}") from None


def get(name: str) -> Callable:
    """The loss function registered under ``name``."""
    return info(name).fn


for _info in (
    LossInfo("mse", regression.mse, "regression", "r^2"),
    LossInfo("mae", regression.mae, "regression", "|r|"),
    LossInfo(
        "huber", regression.huber, "regression",
        "0.5 r^2 if |r| <= delta else delta (|r| - 0.5 delta)", "delta", 1.0,
    ),
    LossInfo(
        "pseudo_huber", regression.pseudo_huber, "regression",
        "delta^2 (sqrt(1 + (r/delta)^2) - 1)", "delta", 1.0,
    ),
    LossInfo("log_cosh", regression.log_cosh, "regression", "log cosh r"),
    LossInfo(
        "quantile", regression.quantile, "regression",
        "tau u if u >= 0 else (tau - 1) u, u = -r", "tau", 0.5,
    ),
    LossInfo(
        "epsilon_insensitive", regression.epsilon_insensitive, "regression",
        "max(0, |r| - epsilon)", "epsilon", 0.1,
    ),
    LossInfo(
        "cross_entropy", classification.cross_entropy, "multiclass",
        "-sum_c q_c log softmax(z)_c, q = (1 - eps) onehot(y) + eps / C", "label_smoothing", 0.0,
    ),
    LossInfo(
        "binary_cross_entropy", classification.binary_cross_entropy, "binary",
        "softplus(x) - y x, y in [0, 1]",
    ),
    LossInfo("hinge", classification.hinge, "binary", "max(0, 1 - y s), y in {-1, +1}"),
    LossInfo("squared_hinge", classification.squared_hinge, "binary", "max(0, 1 - y s)^2, y in {-1, +1}"),
    LossInfo(
        "multiclass_hinge", classification.multiclass_hinge, "multiclass",
        "max_j (s_j + [j != y]) - s_y",
    ),
):
    register(_info)
del _info
