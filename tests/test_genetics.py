"""Tests of helpers.genetics against closed forms, dense references and identities (float64)."""

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp
import numpy as np
import pytest

from helpers import genetics, models, ntk


def _spd(rng, n, rank=None):
    a = rng.standard_normal((n, rank or n))
    return a @ a.T / n


@pytest.fixture
def rng():
    return np.random.default_rng(0)


# ---------------------------------------------------------------- metric side


def test_g_matrix_identity_is_the_entk():
    f, params = models.make_mlp([3, 5, 2], key=jax.random.PRNGKey(1), dtype=jnp.float64)
    x = jax.random.normal(jax.random.PRNGKey(2), (4, 3), dtype=jnp.float64)
    phenotype, theta, _ = genetics.genotype_phenotype_map(f, params, x)
    J = np.asarray(jax.jacfwd(phenotype)(jnp.asarray(theta)))
    # same row order as ntk.flatten (n*C + i) and same numbers
    np.testing.assert_allclose(genetics.g_matrix(J), ntk.flatten(ntk.entk(f, params, x)), rtol=1e-12, atol=1e-12)
    # a central finite difference of the flat map agrees with the autodiff Jacobian
    h = 1e-6
    e = np.zeros(theta.size)
    e[3] = 1.0
    fd = (np.asarray(phenotype(jnp.asarray(theta + h * e))) - np.asarray(phenotype(jnp.asarray(theta - h * e)))) / (2 * h)
    np.testing.assert_allclose(fd, J[:, 3], rtol=1e-6, atol=1e-8)


def test_g_matrix_with_metric(rng):
    J = rng.standard_normal((4, 7))
    M = _spd(rng, 7)
    np.testing.assert_allclose(genetics.g_matrix(J, M), J @ M @ J.T, rtol=1e-12)
    d = rng.uniform(0.1, 2.0, 7)
    np.testing.assert_allclose(genetics.g_matrix(J, d), J @ np.diag(d) @ J.T, rtol=1e-12)
    beta = rng.standard_normal(4)
    np.testing.assert_allclose(genetics.breeders_prediction(J, M, beta), J @ M @ J.T @ beta, rtol=1e-12)


def test_whitening_factor_and_whitened_kernel(rng):
    M = _spd(rng, 6, rank=4)                      # singular on purpose
    S = genetics.whitening_factor(M)
    np.testing.assert_allclose(S, S.T, atol=1e-14)
    np.testing.assert_allclose(S @ S.T, M, atol=1e-12)
    J = rng.standard_normal((3, 6))
    Jw = genetics.whitened_jacobian(J, M)
    np.testing.assert_allclose(Jw @ Jw.T, genetics.g_matrix(J, M), atol=1e-12)
    # output-side and parameter-side Grams share the nonzero spectrum
    out = np.sort(np.linalg.eigvalsh(Jw @ Jw.T))[::-1]
    par = np.sort(np.linalg.eigvalsh(Jw.T @ Jw))[::-1][:3]
    np.testing.assert_allclose(out, par, atol=1e-12)


@pytest.mark.parametrize(
    "M, match",
    [
        (np.array([[1.0, 0.5], [0.0, 1.0]]), "symmetric"),
        (np.array([[1.0, 2.0], [2.0, 1.0]]), "positive semi-definite"),
        (np.ones((2, 3)), "square"),
        (np.array([[np.nan, 0.0], [0.0, 1.0]]), "NaN"),
        (np.array([1.0, -1.0]), "non-negative"),
        (np.ones((2, 2, 2)), "axes"),
    ],
)
def test_check_covariance_rejects_bad_input(M, match):
    with pytest.raises(ValueError, match=match):
        genetics.check_covariance(M)


def test_shape_mismatches_raise(rng):
    J = rng.standard_normal((3, 5))
    with pytest.raises(ValueError, match=r"\(5, 5\)"):
        genetics.g_matrix(J, np.eye(4))
    with pytest.raises(ValueError, match="beta"):
        genetics.breeders_prediction(J, None, np.ones(4))
    with pytest.raises(TypeError, match="M must be an array"):
        genetics.g_matrix(J, "identity")
    with pytest.raises(ValueError, match="readout_jacobian"):
        genetics.pushforward(np.eye(3), np.ones((2, 4)))
    with pytest.raises(ValueError, match="deviations"):
        genetics.response_to_selection(lambda t: t, np.zeros(3), np.zeros((4, 2)), lambda z: z[:, 0])
    with pytest.raises(ValueError, match="traits"):
        genetics.directional_fitness(np.ones(3))(np.ones((2, 4)))
    with pytest.raises(ValueError, match="width"):
        genetics.stabilising_fitness(np.zeros(2), -1.0)


# ---------------------------------------------------------------- population and selection


def test_sample_population_has_exact_moments(rng):
    M = _spd(rng, 5)
    d = genetics.sample_population(M, key=jax.random.PRNGKey(0), size=200)
    assert d.shape == (200, 5)
    np.testing.assert_allclose(d.mean(axis=0), 0.0, atol=1e-13)
    np.testing.assert_allclose(d.T @ d / 200, M, atol=1e-12)
    np.testing.assert_allclose(d[:100], -d[100:], atol=1e-12)       # antithetic pairs
    with pytest.raises(ValueError, match="even"):
        genetics.sample_population(M, key=jax.random.PRNGKey(0), size=201)
    with pytest.raises(ValueError, match="too small"):
        genetics.sample_population(M, key=jax.random.PRNGKey(0), size=4)
    with pytest.raises(ValueError, match="positive semi-definite"):
        genetics.sample_population(-M, key=jax.random.PRNGKey(0), size=200)


def _linear_map(rng, o=3, p=6):
    A = rng.standard_normal((o, p))
    z0 = rng.standard_normal(o)
    theta0 = rng.standard_normal(p)
    return A, z0, theta0, (lambda t: jnp.asarray(z0) + jnp.asarray(A) @ (t - jnp.asarray(theta0)))


def test_breeders_equation_exact_on_linear_map_directional(rng):
    # Gaussian tilting: for z = A theta, delta ~ N(0, M) and W = exp(b.z), the selected mean
    # genotype moves by exactly M A^T b, so Delta zbar = A M A^T b (Lande 1979).
    A, z0, theta0, f = _linear_map(rng)
    M = 1e-4 * _spd(rng, 6)
    b = rng.standard_normal(3)
    d = genetics.sample_population(M, key=jax.random.PRNGKey(1), size=4000)
    out = genetics.response_to_selection(f, theta0, d, genetics.directional_fitness(b))
    np.testing.assert_allclose(out["genotype_shift"], M @ A.T @ b, rtol=1e-4)
    np.testing.assert_allclose(out["response"], A @ M @ A.T @ b, rtol=1e-4)
    # with no heritable-vs-environmental split, S = Cov(w, z) = P beta with P = G here
    np.testing.assert_allclose(out["phenotype_covariance"], A @ M @ A.T, rtol=1e-10)
    np.testing.assert_allclose(out["selection_differential"], out["response"], rtol=1e-10)


def test_breeders_equation_linear_map_stabilising(rng):
    A, z0, theta0, f = _linear_map(rng)
    M = 1e-4 * _spd(rng, 6)
    G = A @ M @ A.T
    omega = 10 * np.sqrt(np.trace(G) / 3)
    optimum = z0 + omega * np.array([1.0, -0.5, 0.2])
    d = genetics.sample_population(M, key=jax.random.PRNGKey(2), size=20000)
    out = genetics.response_to_selection(f, theta0, d, genetics.stabilising_fitness(optimum, omega))
    beta = genetics.stabilising_gradient(z0, G, optimum, omega)
    np.testing.assert_allclose(out["response"], G @ beta, rtol=5e-3)


def test_stabilising_gradient_matches_quadrature():
    # one trait: ln Wbar(zbar) by Gauss-Hermite quadrature, differentiated by central differences
    var, omega, opt = 0.3, 0.7, 1.2
    nodes, weights = np.polynomial.hermite_e.hermegauss(80)

    def log_wbar(zbar):
        z = zbar + np.sqrt(var) * nodes
        return np.log(np.sum(weights * np.exp(-((z - opt) ** 2) / (2 * omega**2))))

    h, zbar = 1e-5, 0.1
    fd = (log_wbar(zbar + h) - log_wbar(zbar - h)) / (2 * h)
    beta = genetics.stabilising_gradient(np.array([zbar]), np.array([[var]]), np.array([opt]), omega)
    np.testing.assert_allclose(beta[0], fd, rtol=1e-7)


def test_selection_weights_are_relative_and_overflow_safe():
    w = genetics.selection_weights(np.array([1000.0, 1000.0 + np.log(3.0)]))
    np.testing.assert_allclose(w, [0.5, 1.5])
    with pytest.raises(ValueError, match="NaN"):
        genetics.selection_weights(np.array([0.0, np.nan]))


def test_gradient_step_is_breeders_equation():
    # one GD step on 0.5|z - y|^2: Delta z = -lr Theta r + O(lr^2)
    f, params = models.make_mlp([2, 8, 2], key=jax.random.PRNGKey(3), dtype=jnp.float64)
    x = jax.random.normal(jax.random.PRNGKey(4), (3, 2), dtype=jnp.float64)
    phenotype, theta, _ = genetics.genotype_phenotype_map(f, params, x)
    J = np.asarray(jax.jacfwd(phenotype)(jnp.asarray(theta)))
    r = np.asarray(phenotype(jnp.asarray(theta))) - 1.0
    errs = []
    for lr in (1e-4, 1e-3):
        dz = np.asarray(phenotype(jnp.asarray(theta - lr * J.T @ r))) - np.asarray(phenotype(jnp.asarray(theta)))
        pred = genetics.breeders_prediction(J, lr * np.eye(theta.size), -r)
        errs.append(np.linalg.norm(dz - pred) / np.linalg.norm(pred))
    assert errs[1] / errs[0] == pytest.approx(10.0, rel=0.05)


# ---------------------------------------------------------------- ML metrics


def test_gradient_covariance_and_adam_metric(rng):
    g = rng.standard_normal((10, 4))
    C = genetics.gradient_covariance(g)
    np.testing.assert_allclose(C, np.cov(g.T, bias=True), atol=1e-14)
    # the centred kernel: second moment minus the mean outer product (seed 001 §1)
    np.testing.assert_allclose(C, g.T @ g / 10 - np.outer(g.mean(0), g.mean(0)), atol=1e-14)
    v = rng.uniform(0.5, 2.0, 4)
    D = np.diag(1.0 / (np.sqrt(v) + 1e-8))
    np.testing.assert_allclose(genetics.adam_metric(C, v), D @ C @ D, rtol=1e-12)
    with pytest.raises(ValueError, match="second_moment"):
        genetics.adam_metric(C, np.ones(3))
    with pytest.raises(ValueError, match="non-negative"):
        genetics.adam_metric(C, -np.ones(4))
    with pytest.raises(ValueError, match="at least 2"):
        genetics.gradient_covariance(np.ones((1, 4)))


# ---------------------------------------------------------------- the dictionary


def test_dictionary_on_a_designed_jacobian(rng):
    # traits 0-1 depend on genes 0-2 (every gene hits both traits), trait 2 on genes 3-4;
    # genes 5-6 are dead; traits 0 and 1 are proportional (a constraint).
    J = np.zeros((3, 7))
    J[0, :3] = [1.0, 2.0, -1.0]
    J[1, :3] = 2 * J[0, :3]
    J[2, 3:5] = [0.5, 1.5]
    G = genetics.g_matrix(J)
    assert genetics.neutrality(J) == 7 - 2
    assert genetics.constraints(G) == 3 - 2
    assert genetics.block_modularity(G, [[0, 1], [2]]) == pytest.approx(1.0)
    assert genetics.block_modularity(G, np.array([0, 0, 1]), correlation=False) == pytest.approx(1.0)
    assert genetics.block_modularity(G, [[0], [1, 2]]) < 1.0
    np.testing.assert_array_equal(genetics.pleiotropy(J), [2, 2, 2, 1, 1, 0, 0])
    np.testing.assert_array_equal(genetics.polygenicity(J), [3, 3, 2])
    assert genetics.density(J) == pytest.approx(8 / 21)
    K = genetics.genome_null_space(J)
    assert K.shape == (7, 5)
    np.testing.assert_allclose(J @ K, 0.0, atol=1e-12)
    U = genetics.phenotype_null_space(G)
    assert U.shape == (3, 1)
    np.testing.assert_allclose(G @ U, 0.0, atol=1e-12)
    np.testing.assert_allclose(np.abs(U[:, 0]), np.array([2.0, 1.0, 0.0]) / np.sqrt(5), atol=1e-12)


def test_modularity_on_unstructured_matrix_and_errors(rng):
    G = np.ones((4, 4))
    assert genetics.block_modularity(G, [[0, 1], [2, 3]]) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="cover"):
        genetics.block_modularity(G, [[0, 1], [2]])
    with pytest.raises(ValueError, match="disjoint"):
        genetics.block_modularity(G, [[0, 1], [1, 2, 3]])
    with pytest.raises(ValueError, match="zero"):
        genetics.block_modularity(np.zeros((2, 2)), [[0], [1]], correlation=False)


def test_pushforward_is_the_readout_gradient_gram(rng):
    A = rng.standard_normal((4, 6))
    theta = rng.standard_normal(6)
    M = _spd(rng, 6)
    f = lambda t: jnp.tanh(jnp.asarray(A) @ t)
    q = lambda z: jnp.stack([jnp.sum(z**2), z[0] * z[1], jnp.sin(z[2])])
    J = np.asarray(jax.jacfwd(f)(jnp.asarray(theta)))
    R = np.asarray(jax.jacfwd(q)(f(jnp.asarray(theta))))
    Jq = np.asarray(jax.jacfwd(lambda t: q(f(t)))(jnp.asarray(theta)))
    np.testing.assert_allclose(genetics.pushforward(genetics.g_matrix(J, M), R), Jq @ M @ Jq.T, rtol=1e-10, atol=1e-12)
