"""The registry and the one signature convention shared by every loss."""

from __future__ import annotations

import inspect

import numpy as np
import pytest

import jloss
from loss_checkers import ALL

REQUIRED = (
    "binary_cross_entropy",
    "cross_entropy",
    "epsilon_insensitive",
    "hinge",
    "huber",
    "log_cosh",
    "mae",
    "mse",
    "multiclass_hinge",
    "pseudo_huber",
    "quantile",
    "squared_hinge",
)
HYPERPARAMETERS = {
    "huber": {"delta": 1.0},
    "pseudo_huber": {"delta": 1.0},
    "quantile": {"tau": 0.5},
    "epsilon_insensitive": {"epsilon": 0.1},
    "cross_entropy": {"label_smoothing": 0.0},
}


def test_available_is_a_sorted_tuple_of_every_loss():
    names = jloss.available()
    assert isinstance(names, tuple)
    assert list(names) == sorted(names)
    assert len(set(names)) == len(names)
    assert set(REQUIRED) <= set(names), set(REQUIRED) - set(names)


@pytest.mark.parametrize("name", REQUIRED)
def test_get_returns_the_exported_function(name):
    assert jloss.get(name) is getattr(jloss, name)


def test_every_registered_name_resolves_to_a_callable():
    for name in jloss.available():
        assert callable(jloss.get(name)), name


def test_unknown_name_lists_the_known_names():
    with pytest.raises(ValueError, match="hubber") as info:
        jloss.get("hubber")
    message = str(info.value)
    for name in REQUIRED:
        assert name in message, (name, message)


@pytest.mark.parametrize("name", REQUIRED)
def test_signature_convention(name):
    params = inspect.signature(getattr(jloss, name)).parameters
    names = list(params)
    assert names[:2] == ["predictions", "targets"], names
    for p in names[:2]:
        assert params[p].default is inspect.Parameter.empty
        assert params[p].kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.POSITIONAL_ONLY)
    for kw, default in (("weights", None), ("where", None), ("reduction", "mean")):
        assert params[kw].kind is inspect.Parameter.KEYWORD_ONLY, (kw, params[kw].kind)
        assert params[kw].default == default, (kw, params[kw].default)
    hyper = HYPERPARAMETERS.get(name, {})
    for kw, default in hyper.items():
        assert params[kw].default == default, (kw, params[kw].default)
    extra = set(names) - {"predictions", "targets", "weights", "where", "reduction"} - set(hyper)
    assert not extra, f"{name} has unexpected parameters {extra}"


@pytest.mark.parametrize("checker", ALL, ids=repr)
def test_called_by_keyword(checker):
    _, p, t, h = checker.inputs("errors")  # the inputs of the (eager) error tests
    out = checker.fn(predictions=p, targets=t, **checker.kw(h), weights=None, where=None, reduction="mean")
    assert np.isfinite(out)


@pytest.mark.parametrize("name", REQUIRED)
def test_docstring_has_an_example(name):
    doc = inspect.getdoc(getattr(jloss, name)) or ""
    assert ">>>" in doc, f"{name} has no doctest example"
