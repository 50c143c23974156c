"""Bad input to helpers.ntk and helpers.structured: a TypeError/ValueError naming the argument."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _badinput import Case, check_coverage, run_case

from helpers import ntk, structured


def _model(p, x):
    return jnp.tanh(x @ p["w1"]) @ p["w2"]


P = {"w1": np.ones((3, 4), np.float32) * 0.1, "w2": np.ones((4, 2), np.float32) * 0.1}
X = np.linspace(-1, 1, 15, dtype=np.float32).reshape(5, 3)
K = np.eye(4)
FULL = np.zeros((3, 3, 2, 2))
VALS = np.array([3.0, 2.0, 1.0])


def _nan(a):
    a = np.array(a, dtype=np.float32)
    a.flat[0] = np.nan
    return a


def _kernel_cases(fn, extra=None):
    extra = extra or {}
    name = fn.__name__
    return [
        Case(fn, (None, P, X), extra, "f", "f is not callable"),
        Case(fn, (_model, {"w1": P["w1"]}, X), extra, "params", "params misses a leaf the model reads"),
        Case(fn, (_model, {"w1": P["w2"], "w2": P["w1"]}, X), extra, "params", "params leaves of the wrong shapes"),
        Case(fn, (_model, {"w1": P["w1"].astype(np.int32), "w2": P["w2"]}, X), extra, "params['w1']", "integer parameter leaf"),
        Case(fn, (_model, {"w1": _nan(P["w1"]), "w2": P["w2"]}, X), extra, "params['w1']", "NaN parameter"),
        Case(fn, (_model, {}, X), extra, "params", "no parameter leaves"),
        Case(fn, (_model, P, X[:0]), extra, "x1" if name != "entk_operator" and name != "jacobian" and name != "explain" else "x", "empty batch"),
        Case(fn, (_model, P, _nan(X)), extra, ("x1", "x"), "NaN input"),
        Case(fn, (_model, P, "abc"), extra, ("x1", "x"), "a string as input"),
        Case(fn, (_model, P, X[:, :2]), extra, ("params", "x"), "input of the wrong width"),
        Case(fn, (_model, P, np.float32(1.0)), extra, ("x1", "x"), "a scalar input without batch axis"),
        Case(fn, (lambda p, x: _model(p, x)[:, 0], P, X), extra, "f(params, x) must return", "model returns (N,)"),
        Case(fn, (lambda p, x: _model(p, x).sum(0, keepdims=True), P, X), extra, ("f(params, x)", "mixes examples"), "model drops the batch axis"),
    ]


def _pair_cases(fn, extra=None):
    extra = extra or {}
    return [
        Case(fn, (_model, P, X, X[:, :2]), extra, "x2", "x2 of another example shape"),
        Case(fn, (_model, P, X, _nan(X)), extra, "x2", "NaN in x2"),
        Case(fn, (_model, P, X, X[:0]), extra, "x2", "empty x2"),
        Case(fn, (_model, P, X), {**extra, "method": "fast"}, "method", "unknown method"),
        Case(fn, (_model, P, X), {**extra, "block_bytes": 0}, "block_bytes", "zero memory budget"),
        Case(fn, (_model, P, X), {**extra, "block_bytes": 1.5}, "block_bytes", "non-integer budget"),
        Case(fn, (lambda p, x: _model(p, x - x.mean(0)), P, X), extra, "mixes examples", "a model that centres by the batch mean"),
    ]


CASES = (
    _kernel_cases(ntk.entk)
    + _pair_cases(ntk.entk)
    + _kernel_cases(ntk.class_mean_entk)
    + _pair_cases(ntk.class_mean_entk)
    + _kernel_cases(ntk.layerwise_entk)
    + _pair_cases(ntk.layerwise_entk)
    + [
        Case(ntk.layerwise_entk, (_model, P, X), {"groups": {"a": ["w1"]}}, "groups", "groups that miss a key"),
        Case(ntk.layerwise_entk, (_model, P, X), {"groups": {"a": ["w1", "w2"], "b": ["w2"]}}, "groups", "overlapping groups"),
        Case(ntk.layerwise_entk, (_model, P, X), {"groups": {"a": ["zz"]}}, "groups", "a group naming an absent key"),
        Case(ntk.layerwise_entk, (_model, P, X), {"groups": ["a"]}, "groups", "labels not shaped like params"),
        Case(ntk.layerwise_entk, (lambda p, x: jnp.tanh(x @ p[0]) @ p[1], [P["w1"], P["w2"]], X), {}, "groups", "groups=None with list params"),
        Case(ntk.layerwise_entk, (_model, P, X), {"collapse": "trace"}, "collapse", "unknown collapse"),
        Case(ntk.entk_operator, (_model, P, X), {"collapse": "mean"}, "collapse", "unknown collapse"),
    ]
    + [c for c in _kernel_cases(ntk.entk_operator) if c.why != "model drops the batch axis"]
    + _kernel_cases(ntk.jacobian)
    + _kernel_cases(ntk.explain)[:4]
    + [
        Case(ntk.entk_fn, (None,), {}, "f", "f is not callable"),
        Case(ntk.entk_fn, (_model,), {"collapse": "sum"}, "collapse", "unknown collapse"),
        Case(ntk.entk_fn, (_model,), {"diagonal": "yes"}, "diagonal", "diagonal not a bool"),
        Case(ntk.entk_fn, (_model,), {"implementation": "magic"}, "implementation", "unknown implementation"),
        Case(ntk.flatten, (np.zeros((3, 3, 2)),), {}, "K", "a 3-axis kernel"),
        Case(ntk.flatten, (np.zeros((3, 3, 2, 3)),), {}, "K", "class axes of different sizes"),
        Case(ntk.flatten, (_nan(FULL),), {}, "K", "NaN kernel"),
        Case(ntk.flatten, ("K",), {}, "K", "a string"),
        Case(ntk.class_mean, (np.zeros((3, 3)),), {}, "K", "an (N, N) kernel"),
        Case(ntk.class_mean, (_nan(FULL),), {}, "K", "NaN kernel"),
        Case(ntk.per_class, (FULL, 2), {}, "c", "class index out of range"),
        Case(ntk.per_class, (FULL, 1.0), {}, "c", "float class index"),
        Case(ntk.per_class, (np.zeros((3, 3)), 0), {}, "K", "an (N, N) kernel"),
        Case(ntk.top_eigenpairs, (K, 5), {}, "k", "k larger than the dimension"),
        Case(ntk.top_eigenpairs, (K, 0), {}, "k", "k = 0"),
        Case(ntk.top_eigenpairs, (K, 2.0), {}, "k", "float k"),
        Case(ntk.top_eigenpairs, (np.triu(np.ones((4, 4))), 2), {}, "A", "non-symmetric matrix"),
        Case(ntk.top_eigenpairs, (np.ones((4, 3)), 2), {}, "A", "non-square matrix"),
        Case(ntk.top_eigenpairs, (_nan(K), 2), {}, "A", "NaN matrix"),
        Case(ntk.top_eigenpairs, (np.zeros((0, 0)), 1), {}, "A", "empty matrix"),
        Case(ntk.top_eigenpairs, (K, 2), {"tol": -1.0}, "tol", "negative tolerance"),
        Case(ntk.top_eigenpairs, (ntk.entk_operator(_model, P, X), 10), {}, "k", "k = dim for an operator"),
        Case(ntk.drop_ratios, (np.array([1.0]),), {}, "eigenvalues", "one eigenvalue"),
        Case(ntk.drop_ratios, (np.array([1.0, 2.0]),), {}, "eigenvalues", "ascending order"),
        Case(ntk.drop_ratios, (_nan(VALS),), {}, "eigenvalues", "NaN eigenvalue"),
        Case(ntk.drop_ratios, (VALS,), {"rel_floor": -1.0}, "rel_floor", "negative floor"),
        Case(ntk.drop_ratios, (np.ones((2, 2)),), {}, "eigenvalues", "a matrix"),
        Case(ntk.find_cliffs, (VALS,), {"min_ratio": 1.0}, "min_ratio", "min_ratio = 1"),
        Case(ntk.find_cliffs, (VALS,), {"window": 0}, "window", "window = 0"),
        Case(ntk.find_cliffs, (VALS,), {"top": 5}, "top", "more cliffs than drops"),
        Case(ntk.find_cliffs, (VALS,), {"top": 0}, "top", "top = 0"),
        Case(ntk.find_cliffs, (VALS,), {"prominence": -1.0}, "prominence", "negative prominence"),
        Case(ntk.find_cliffs, ([3.0, "a"],), {}, "eigenvalues", "a string eigenvalue"),
        Case(ntk.linearized_outputs, (K, np.zeros(3), np.zeros(4), [0, 1]), {}, "kernel", "f0 of the wrong length"),
        Case(ntk.linearized_outputs, (K, np.zeros(4), np.zeros(3), [0, 1]), {}, "y", "y of the wrong length"),
        Case(ntk.linearized_outputs, (K, np.zeros(4), np.zeros(4), [-1.0]), {}, "times", "negative time"),
        Case(ntk.linearized_outputs, (K, np.zeros(4), np.zeros(4), [0.5]), {"discrete": True}, "times", "fractional step"),
        Case(ntk.linearized_outputs, (K, _nan(np.zeros(4)), np.zeros(4), [1.0]), {}, "f0", "NaN f0"),
        Case(ntk.linearized_outputs, (K, np.zeros(4), np.zeros(4), [1.0]), {"lr": 0.0}, "lr", "zero learning rate"),
        Case(ntk.linearized_outputs, (np.triu(np.ones((4, 4))), np.zeros(4), np.zeros(4), [1.0]), {}, "kernel", "non-symmetric kernel"),
        Case(ntk.kernel_regression, (np.ones((2, 3)), K, np.zeros(4)), {}, "k_test_train", "test kernel of the wrong width"),
        Case(ntk.kernel_regression, (np.ones((2, 4)), K, np.zeros(3)), {}, "y_train", "y of the wrong length"),
        Case(ntk.kernel_regression, (np.ones((2, 4)), np.zeros((4, 4)), np.zeros(4)), {}, "k_train_train", "singular kernel"),
        Case(ntk.kernel_regression, (np.ones((2, 4)), K, _nan(np.zeros(4))), {}, "y_train", "NaN targets"),
        Case(ntk.kernel_regression, (np.ones((2, 4)), K, np.zeros(4)), {"ridge": -1.0}, "ridge", "negative ridge"),
        Case(ntk.check_finite, ({"a": _nan(np.ones(2))}, "params"), {}, "params['a']", "NaN leaf"),
        Case(structured.analyze, (_model, {"w1": P["w1"]}, X), {}, "params", "params misses a leaf"),
        Case(structured.cached_plan, (_model, {"w1": P["w1"]}, X), {}, "params", "params misses a leaf"),
        Case(structured.structured_kernels, (_model, P, X), {"labels": ["a"]}, "labels", "one label for two leaves"),
        Case(structured.structured_kernels, (_model, P, X), {"collapse": "trace"}, "collapse", "unknown collapse"),
        Case(structured.structured_kernels, (_model, P, _nan(X)), {}, "x1", "NaN input"),
        Case(structured.layer_factors, (_model, P, _nan(X)), {}, "x", "NaN input"),
        Case(structured.layer_factors, (_model, {"w1": P["w1"]}, X), {}, "params", "params misses a leaf"),
        Case(structured.forward_backward_kernels, (_model, P, X[:0]), {}, "x", "empty batch"),
        Case(structured.forward_backward_kernels, (lambda p, x: _model(p, x - x.mean(0)), P, X), {}, "mixes examples", "a model that centres by the batch mean"),
    ]
)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_bad_input(case):
    run_case(case)


def test_every_public_function_has_a_case():
    check_coverage(ntk, CASES)
    check_coverage(structured, CASES)
