"""Tests of helpers.curvature against jax.hessian, explicit map curvature, dense references,
enumeration over minibatches and identities (shared spectra). All in float64."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from helpers import curvature as cv
from helpers import ntk
from helpers.models import make_mlp

jax.config.update("jax_enable_x64", True)

N, D_IN, C = 6, 3, 3


@pytest.fixture(scope="module")
def problem():
    kx, km, ky = jax.random.split(jax.random.PRNGKey(0), 3)
    x = jax.random.normal(kx, (N, D_IN), jnp.float64)
    f, params = make_mlp([D_IN, 5, C], key=km, activation="tanh", dtype=jnp.float64)
    labels = np.asarray(jax.random.randint(ky, (N,), 0, C))
    y_mse = np.asarray(jax.random.normal(ky, (N, C), jnp.float64))
    return f, params, x, labels, y_mse


def _targets(problem, loss):
    _, _, _, labels, y_mse = problem
    return y_mse if loss == "mse" else labels


def _rel(a, b):
    return np.abs(np.asarray(a) - np.asarray(b)).max() / np.abs(np.asarray(b)).max()


CASES = [("mse", "mean"), ("mse", "sum"), ("cross_entropy", "mean")]


@pytest.mark.parametrize("loss,reduction", CASES)
def test_split_sums_to_jax_hessian(problem, loss, reduction):
    f, params, x, _, _ = problem
    y = _targets(problem, loss)
    split = cv.gauss_newton_split(f, params, x, y, loss=loss, reduction=reduction)
    # independent reference: jax.hessian of the loss written out here
    flat, unravel = ravel_pytree(params)
    onehot = jax.nn.one_hot(y, C) if loss == "cross_entropy" else y
    w = 1.0 / N if reduction == "mean" else 1.0

    def total(t):
        z = f(unravel(t), x)
        if loss == "mse":
            return w * 0.5 * jnp.sum((z - onehot) ** 2)
        return -w * jnp.sum(onehot * jax.nn.log_softmax(z))

    ref = np.asarray(jax.hessian(total)(flat))
    assert _rel(split["hessian"], ref) < 1e-12
    assert _rel(split["gauss_newton"] + split["residual_term"], ref) < 1e-10
    assert np.isclose(cv.loss_value(f, params, x, y, loss=loss, reduction=reduction), float(total(flat)), rtol=1e-12)


@pytest.mark.parametrize("loss", cv.LOSSES)
def test_make_loss_is_a_jittable_loss_value(problem, loss):
    f, params, x, _, _ = problem
    y = _targets(problem, loss)
    loss_fn = jax.jit(cv.make_loss(f, x, y, loss=loss, reduction="sum"))
    assert np.isclose(float(loss_fn(params)), cv.loss_value(f, params, x, y, loss=loss, reduction="sum"), rtol=1e-12)
    grad = ravel_pytree(jax.grad(loss_fn)(params))[0]
    g = cv.per_example_gradients(f, params, x, y, loss=loss)
    assert _rel(grad, g.sum(axis=0)) < 1e-12
    with pytest.raises(ValueError, match="loss must be one of"):
        cv.make_loss(f, x, y, loss="l1")


@pytest.mark.parametrize("loss", cv.LOSSES)
def test_closed_form_residual_and_output_hessian(problem, loss):
    f, params, x, _, _ = problem
    y = _targets(problem, loss)
    z = f(params, x)
    onehot = jax.nn.one_hot(y, C) if loss == "cross_entropy" else y

    def total(zz):
        if loss == "mse":
            return 0.5 * jnp.sum((zz - onehot) ** 2) / N
        return -jnp.sum(onehot * jax.nn.log_softmax(zz)) / N

    r = cv.residual(z, y, loss=loss)
    hz = cv.output_hessian(z, y, loss=loss)
    assert _rel(r, jax.grad(total)(z)) < 1e-12
    full = np.asarray(jax.hessian(total)(z)).reshape(N * C, N * C)
    block = np.zeros((N * C, N * C))
    for n in range(N):
        block[n * C : (n + 1) * C, n * C : (n + 1) * C] = hz[n]
    assert _rel(block, full) < 1e-12
    assert np.allclose(cv.pointwise_loss(z, y, loss=loss).sum() / N, total(z), rtol=1e-12)


@pytest.mark.parametrize("loss", cv.LOSSES)
def test_gauss_newton_and_residual_term_from_explicit_pieces(problem, loss):
    f, params, x, _, _ = problem
    y = _targets(problem, loss)
    jac = ntk.jacobian(f, params, x).reshape(N * C, -1)
    z = f(params, x)
    hz = cv.output_hessian(z, y, loss=loss)
    big = np.zeros((N * C, N * C))
    for n in range(N):
        big[n * C : (n + 1) * C, n * C : (n + 1) * C] = hz[n]
    assert _rel(cv.gauss_newton(f, params, x, y, loss=loss), jac.T @ big @ jac) < 1e-12
    # map curvature T_aij = d^2 z_a / dtheta_i dtheta_j, formed explicitly on this tiny model
    flat, unravel = ravel_pytree(params)
    T = np.asarray(jax.hessian(lambda t: f(unravel(t), x))(flat)).reshape(N * C, flat.size, flat.size)
    r = cv.residual(z, y, loss=loss).reshape(-1)
    assert _rel(cv.residual_term(f, params, x, y, loss=loss), np.einsum("a,aij->ij", r, T)) < 1e-12


@pytest.mark.parametrize("loss", cv.LOSSES)
def test_shared_nonzero_spectrum(problem, loss):
    f, params, x, _, _ = problem
    y = _targets(problem, loss)
    gn = cv.gauss_newton(f, params, x, y, loss=loss)
    kernel = cv.output_space_gauss_newton(f, params, x, y, loss=loss)
    eg = np.sort(np.linalg.eigvalsh(gn))[::-1]
    ek = np.sort(np.linalg.eigvalsh(kernel))[::-1]
    m = N * C
    assert np.abs(eg[:m] - ek).max() < 1e-10 * eg[0]
    assert np.abs(eg[m:]).max() < 1e-10 * eg[0]  # P - N*C zero eigenvalues on the parameter side
    rank = int(np.sum(ek > 1e-10 * ek[0]))
    # softmax is blind to a common shift of the logits: one null direction per example
    assert rank == (N * C if loss == "mse" else N * (C - 1))
    if loss == "mse":
        assert _rel(kernel, ntk.flatten(ntk.entk(f, params, x)) / N) < 1e-12


@pytest.mark.parametrize("loss", cv.LOSSES)
def test_operators_match_dense(problem, loss):
    f, params, x, _, _ = problem
    y = _targets(problem, loss)
    split = cv.gauss_newton_split(f, params, x, y, loss=loss)
    g = cv.per_example_gradients(f, params, x, y, loss=loss)
    p = g.shape[1]
    V = np.random.default_rng(1).standard_normal((p, 4))
    pairs = [
        (cv.hessian_operator, split["hessian"], {}),
        (cv.gauss_newton_operator, split["gauss_newton"], {}),
        (cv.residual_term_operator, split["residual_term"], {}),
        (cv.gradient_covariance_operator, cv.gradient_covariance(g, batch_size=2), {"batch_size": 2}),
    ]
    for make, dense, kw in pairs:
        op = make(f, params, x, y, loss=loss, **kw)
        assert op.shape == (p, p)
        assert _rel(op @ V, dense @ V) < 1e-10
    vals_op, _ = ntk.top_eigenpairs(cv.gauss_newton_operator(f, params, x, y, loss=loss), 3)
    vals_dense, _ = ntk.top_eigenpairs(split["gauss_newton"], 3)
    assert np.allclose(vals_op, vals_dense, rtol=1e-8)


@pytest.mark.parametrize("loss", cv.LOSSES)
def test_per_example_gradients_and_loss_gradient_kernel(problem, loss):
    f, params, x, _, _ = problem
    y = _targets(problem, loss)
    g = cv.per_example_gradients(f, params, x, y, loss=loss)
    flat, unravel = ravel_pytree(params)
    onehot = jax.nn.one_hot(y, C) if loss == "cross_entropy" else jnp.asarray(y)
    for n in (0, N - 1):
        single = jax.grad(lambda t: _single_loss(f, unravel(t), x[n], onehot[n], loss))(flat)
        assert _rel(g[n], single) < 1e-12
    mean_grad = jax.grad(lambda t: jnp.mean(jax.vmap(lambda xi, yi: _single_loss(f, unravel(t), xi, yi, loss))(x, onehot)))(flat)
    assert _rel(g.mean(axis=0), mean_grad) < 1e-12
    assert _rel(cv.loss_gradient_kernel(f, params, x, y, loss=loss), g @ g.T) < 1e-10


def _single_loss(f, params, xi, yi, loss):
    z = f(params, xi[None])[0]
    if loss == "mse":
        return 0.5 * jnp.sum((z - yi) ** 2)
    return -jnp.sum(yi * jax.nn.log_softmax(z))


def test_minibatch_covariance_by_enumeration():
    rng = np.random.default_rng(2)
    g = rng.standard_normal((6, 4))
    n, b = g.shape[0], 2
    # without replacement: every unordered batch equally likely
    means = np.array([g[list(s)].mean(axis=0) for s in itertools.combinations(range(n), b)])
    assert _rel(np.cov(means.T, bias=True), cv.gradient_covariance(g, batch_size=b)) < 1e-12
    # with replacement: every ordered tuple equally likely
    means = np.array([g[list(s)].mean(axis=0) for s in itertools.product(range(n), repeat=b)])
    assert _rel(np.cov(means.T, bias=True), cv.gradient_covariance(g, batch_size=b, replacement=True)) < 1e-12
    # batch of one: the per-example covariance, second moment minus mean outer product
    ref = np.cov(g.T, bias=True)
    assert _rel(cv.gradient_covariance(g), ref) < 1e-12
    assert _rel(cv.gradient_second_moment(g) - np.outer(g.mean(0), g.mean(0)), ref) < 1e-12
    assert cv.minibatch_factor(n, n) == 0.0
    eig = np.linalg.eigvalsh(cv.gradient_covariance(rng.standard_normal((3, 5))))
    assert np.sum(eig > 1e-10 * eig.max()) == 2  # rank <= N - 1


def test_subspace_overlap():
    e = np.eye(5)
    assert np.isclose(cv.subspace_overlap(e[:, :2], e[:, :2]), 1.0)
    assert np.isclose(cv.subspace_overlap(e[:, :2], e[:, 2:4]), 0.0, atol=1e-12)
    assert np.isclose(cv.subspace_overlap(e[:, [0, 1]], e[:, [0, 2]]), 0.5)
    # a rotated basis of the same span overlaps fully
    rot = e[:, :2] @ np.array([[np.cos(0.3), -np.sin(0.3)], [np.sin(0.3), np.cos(0.3)]])
    assert np.isclose(cv.subspace_overlap(e[:, :2], rot), 1.0)
    with pytest.raises(ValueError, match="same D"):
        cv.subspace_overlap(np.ones((4, 2)), np.ones((5, 2)))


# bad input: the table in tests/test_bad_inputs_curvature.py


def test_full_batch_routes_accept_models_that_couple_examples(problem):
    """Centring by the batch mean couples the examples: the per-example routes refuse it (see the
    bad-input table), the full-batch ones stay exact. Reference: the full-batch Jacobian by jacfwd."""
    f, params, x, _, y_mse = problem

    def coupled(p, inputs):
        out = f(p, inputs)
        return out - out.mean(axis=0, keepdims=True)

    flat, unravel = ravel_pytree(params)
    jac = np.asarray(jax.jacfwd(lambda t: coupled(unravel(t), x).reshape(-1))(flat))   # (N*C, P)
    V = np.random.default_rng(3).standard_normal((flat.size, 3))
    gn = cv.gauss_newton_operator(coupled, params, x, y_mse)
    assert _rel(gn @ V, jac.T @ jac @ V / N) < 1e-10
    hess = cv.loss_hessian(coupled, params, x, y_mse)
    ref = np.asarray(jax.hessian(lambda t: 0.5 * jnp.sum((coupled(unravel(t), x) - y_mse) ** 2) / N)(flat))
    assert _rel(hess, ref) < 1e-12
    with pytest.raises(ValueError, match="mixes examples"):
        cv.gauss_newton(coupled, params, x, y_mse)
