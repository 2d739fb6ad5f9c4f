"""jloss: losses, a compiled Optax ``minimize`` loop and vmap sweeps for JAX.

Losses share one signature, ``loss(predictions, targets, [hyperparameter], *, weights=None,
where=None, reduction="mean")``; see :mod:`jloss.reduction` for the semantics of the options.
"""

from jloss.classification import binary_cross_entropy, cross_entropy, hinge, multiclass_hinge, squared_hinge
from jloss.differentiation import Implicit, Unrolled
from jloss.minimize import Result, Status, minimize
from jloss.registry import LossInfo, available, get, info, register
from jloss.regression import epsilon_insensitive, huber, log_cosh, mae, mse, pseudo_huber, quantile
from jloss.sweep import SweepTable, sweep, sweep_best, sweep_member, sweep_table

__version__ = "0.1.0"
