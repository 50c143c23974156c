"""Bad-input sweep of helpers.curvature (issue 12): every public function answers bad input with a
TypeError/ValueError that names the argument (machinery in tests/_badinput.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import curvature as cv
from helpers.models import make_mlp

from _badinput import Case, check_coverage, run_case

jax.config.update("jax_enable_x64", True)

N, D, C = 4, 3, 2
f, params = make_mlp([D, 5, C], key=jax.random.PRNGKey(0), dtype=jnp.float64)
x = np.asarray(jax.random.normal(jax.random.PRNGKey(1), (N, D)))
y = np.asarray(jax.random.normal(jax.random.PRNGKey(2), (N, C)))
labels = np.array([0, 1, 1, 0])
z = np.asarray(f(params, x))
g = np.asarray(jax.random.normal(jax.random.PRNGKey(3), (N, 7)))

x_nan = x.copy()
x_nan[0, 0] = np.nan
y_inf = y.copy()
y_inf[1, 1] = np.inf
z_nan = z.copy()
z_nan[2, 0] = np.nan
params_nan = jax.tree_util.tree_map(lambda a: a.at[0].set(np.nan) if a.ndim == 1 else a, params)
params_int = jax.tree_util.tree_map(lambda a: a.astype(jnp.int32), params)
params_wrong = {"layer1": params["layer1"], "layer2": {"b": params["layer2"]["b"]}}   # a pytree that does not fit the model
params_shape = jax.tree_util.tree_map(lambda a: a[:-1], params)  # every leaf one row short


def batch_mean_model(p, inputs):
    """Couples the examples of a batch: centring by the batch mean (what batch norm does)."""
    out = f(p, inputs)
    return out - out.mean(axis=0, keepdims=True)


MODEL_FUNCS = [
    cv.loss_value, cv.loss_hessian, cv.gauss_newton, cv.residual_term, cv.gauss_newton_split,
    cv.output_space_gauss_newton, cv.per_example_gradients, cv.loss_gradient_kernel,
    cv.hessian_operator, cv.gauss_newton_operator, cv.residual_term_operator,
    cv.gradient_covariance_operator,
]

CASES: list[Case] = []
for fn in MODEL_FUNCS:
    CASES += [
        Case(fn, ("not a model", params, x, y), {}, "f", "f not callable"),
        Case(fn, (f, params_nan, x, y), {}, "params", "NaN parameter"),
        Case(fn, (f, params_int, x, y), {}, "params", "integer parameters"),
        Case(fn, (f, params_wrong, x, y), {}, "params", "params pytree that does not fit the model"),
        Case(fn, (f, params_shape, x, y), {}, "params", "params leaves of the wrong shape"),
        Case(fn, (f, {}, x, y), {}, "params", "empty params"),
        Case(fn, (f, params, x_nan, y), {}, "x", "NaN input"),
        Case(fn, (f, params, x[:0], y[:0]), {}, "x", "empty batch N = 0"),
        Case(fn, (f, params, np.float64(1.0), y), {}, "x", "scalar x"),
        Case(fn, (f, params, x, y[:-1]), {}, "targets", "targets with N - 1 rows"),
        Case(fn, (f, params, x, y[:, :1]), {}, "targets", "targets with the wrong class count"),
        Case(fn, (f, params, x, y_inf), {}, "targets", "inf target"),
        Case(fn, (f, params, x, "labels"), {}, "targets", "string targets"),
        Case(fn, (f, params, x, y), {"loss": "hinge"}, "loss", "unknown loss"),
        Case(fn, (f, params, x, labels + C), {"loss": "cross_entropy"}, "targets", "label out of range"),
        Case(fn, (f, params, x, labels.astype(float)), {"loss": "cross_entropy"}, "targets", "float labels (N,)"),
        Case(fn, (f, params, x, y), {"loss": "cross_entropy"}, "targets", "CE targets that are not probability rows"),
    ]
    if fn not in (cv.per_example_gradients, cv.loss_gradient_kernel, cv.gradient_covariance_operator):
        CASES.append(Case(fn, (f, params, x, y), {"reduction": "median"}, "reduction", "unknown reduction"))

PER_EXAMPLE = [cv.gauss_newton, cv.gauss_newton_split, cv.output_space_gauss_newton, cv.per_example_gradients,
               cv.loss_gradient_kernel, cv.gradient_covariance_operator]
for fn in PER_EXAMPLE:
    CASES.append(Case(fn, (batch_mean_model, params, x, y), {}, "mixes examples", "batch-coupled model"))

CASES += [
    Case(cv.gradient_covariance_operator, (f, params, x[:1], y[:1]), {}, "x", "one example: no covariance"),
    Case(cv.gradient_covariance_operator, (f, params, x, y), {"batch_size": N + 1}, "batch_size", "batch larger than N"),
    # make_loss: no params yet, so only f, x, targets and the options
    Case(cv.make_loss, ("f", x, y), {}, "f", "f not callable"),
    Case(cv.make_loss, (f, x[:0], y[:0]), {}, "x", "empty batch N = 0 (was ZeroDivisionError)"),
    Case(cv.make_loss, (f, x_nan, y), {}, "x", "NaN input"),
    Case(cv.make_loss, (f, x, y[:-1]), {}, "targets", "targets with N - 1 rows"),
    Case(cv.make_loss, (f, x, y_inf), {}, "targets", "inf target"),
    Case(cv.make_loss, (f, x, y), {"loss": "l1"}, "loss", "unknown loss"),
    Case(cv.make_loss, (f, x, y), {"reduction": "max"}, "reduction", "unknown reduction"),
    Case(cv.make_loss, (f, x, labels - 1), {"loss": "cross_entropy"}, "targets", "negative label"),
]
for fn in (cv.pointwise_loss, cv.residual, cv.output_hessian):
    CASES += [
        Case(fn, (z[:0], y[:0]), {}, "outputs", "N = 0 (was ZeroDivisionError)"),
        Case(fn, (z.reshape(-1), y), {}, "outputs", "1-D outputs"),
        Case(fn, (z[None], y), {}, "outputs", "3-D outputs"),
        Case(fn, (z_nan, y), {}, "outputs", "NaN output"),
        Case(fn, (z.astype(bool), y), {}, "outputs", "boolean outputs"),
        Case(fn, ([["a", "b"]], y), {}, "outputs", "strings"),
        Case(fn, (z, y[:-1]), {}, "targets", "targets with N - 1 rows"),
        Case(fn, (z, y_inf), {}, "targets", "inf target"),
        Case(fn, (z, y), {"loss": "l2"}, "loss", "unknown loss"),
        Case(fn, (z, labels + 5), {"loss": "cross_entropy"}, "targets", "label out of range"),
    ]
for fn in (cv.residual, cv.output_hessian):
    CASES.append(Case(fn, (z, y), {"reduction": None}, "reduction", "reduction None"))
for fn in (cv.gradient_second_moment, cv.gradient_covariance):
    CASES += [
        Case(fn, (g[0],), {}, "per_example", "1-D gradients"),
        Case(fn, (g[:1],), {}, "per_example", "one example"),
        Case(fn, (g[:0],), {}, "per_example", "no examples"),
        Case(fn, (np.where(g > 1, np.nan, g),), {}, "per_example", "NaN gradient"),
        Case(fn, ({"g": g},), {}, "per_example", "a dict"),
        Case(fn, (g.astype(complex),), {}, "per_example", "complex gradients"),
    ]
CASES += [
    Case(cv.gradient_covariance, (g,), {"batch_size": 2.0}, "batch_size", "float batch size"),
    Case(cv.gradient_covariance, (g,), {"batch_size": 0}, "batch_size", "batch size 0"),
    Case(cv.gradient_covariance, (g,), {"batch_size": 2, "replacement": "yes"}, "replacement", "replacement not a bool"),
    Case(cv.minibatch_factor, (4, 2.5), {}, "batch_size", "float batch size"),
    Case(cv.minibatch_factor, (4, True), {}, "batch_size", "bool batch size"),
    Case(cv.minibatch_factor, (4, 5), {}, "batch_size", "batch larger than N"),
    Case(cv.minibatch_factor, (4, 0), {"replacement": True}, "batch_size", "batch size 0 with replacement"),
    Case(cv.minibatch_factor, (1, 1), {}, "num_examples", "one example without replacement"),
    Case(cv.minibatch_factor, (4.0, 2), {}, "num_examples", "float N"),
    Case(cv.minibatch_factor, (0, None), {}, "num_examples", "N = 0"),
    Case(cv.minibatch_factor, (4, 2), {"replacement": 1}, "replacement", "replacement not a bool"),
    Case(cv.subspace_overlap, (np.ones((4, 2)), np.ones((5, 2))), {}, ("V", "D"), "different D"),
    Case(cv.subspace_overlap, (np.ones((4, 2, 1)), np.ones((4, 2))), {}, "U", "3-D U"),
    Case(cv.subspace_overlap, (np.eye(4)[:, :2], np.full((4, 1), np.nan)), {}, "V", "NaN V"),
    Case(cv.subspace_overlap, (np.zeros((4, 2)), np.eye(4)[:, :2]), {}, "U", "U of rank 0 (was NaN)"),
    Case(cv.subspace_overlap, (np.ones((4, 2)), np.eye(4)[:, :2]), {}, "U", "U with dependent columns"),
    Case(cv.subspace_overlap, (np.eye(3), np.ones((3, 5))), {}, "V", "more columns than D"),
    Case(cv.subspace_overlap, (np.zeros((4, 0)), np.eye(4)[:, :2]), {}, "U", "no columns"),
    Case(cv.subspace_overlap, ("U", np.eye(4)), {}, "U", "string U"),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_bad_input(case):
    run_case(case)


def test_coverage():
    check_coverage(cv, CASES)


def test_good_inputs_still_work():
    """The checks refuse only bad input: the same calls with good arguments succeed."""
    for fn in MODEL_FUNCS:
        fn(f, params, x, y)
    cv.make_loss(f, x, y)(params)
    cv.gradient_covariance(g, batch_size=2)
    assert cv.minibatch_factor(4, None) == 1.0
    assert np.isclose(cv.subspace_overlap(np.eye(4)[:, :2], np.eye(4)[:, :2]), 1.0)
    # integer inputs (token ids) pass through to the model unchanged
    emb = {"table": jnp.asarray(np.random.default_rng(0).standard_normal((6, C)))}
    tokens = np.array([0, 3, 5, 1])
    cv.gauss_newton(lambda p, t: p["table"][t], emb, tokens, y)


def test_float32_params_with_float64_inputs():
    """An operator takes its dtype from the loss, its tangents from the parameters (issue 12)."""
    p32 = jax.tree_util.tree_map(lambda a: a.astype(jnp.float32), params)
    for make in (cv.hessian_operator, cv.gauss_newton_operator, cv.residual_term_operator, cv.gradient_covariance_operator):
        op = make(f, p32, x, y)
        v = np.ones(op.shape[1])
        out = op @ v
        assert out.shape == (op.shape[0],) and np.all(np.isfinite(out))
