"""Bad-input sweep of helpers.genetics (issue 12): every public function answers bad input with a
TypeError/ValueError that names the argument (machinery in tests/_badinput.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import genetics as ge
from helpers.models import make_mlp

from _badinput import Case, check_coverage, run_case

jax.config.update("jax_enable_x64", True)

rng = np.random.default_rng(0)
O, P = 3, 5
J = rng.standard_normal((O, P))
M = np.eye(P)
G = J @ J.T
beta = np.ones(O)
J_nan = J.copy()
J_nan[0, 0] = np.nan
G_inf = G.copy()
G_inf[1, 1] = np.inf
key = jax.random.PRNGKey(0)
f, params = make_mlp([2, 4, 2], key=key, dtype=jnp.float64)
x = np.asarray(jax.random.normal(key, (3, 2)))
phen = lambda t: jnp.tanh(jnp.asarray(J) @ t)
deviations = ge.sample_population(M, key=key, size=2 * P + 2)
fitness = ge.directional_fitness(beta)

CASES: list[Case] = []
for fn, args, name in [
    (ge.g_matrix, (J,), "jacobian"),
    (ge.breeders_prediction, (J, M, beta), "jacobian"),
    (ge.whitened_jacobian, (J, M), "jacobian"),
    (ge.pleiotropy, (J,), "jacobian"),
    (ge.polygenicity, (J,), "jacobian"),
    (ge.neutrality, (J,), "jacobian"),
    (ge.genome_null_space, (J,), "jacobian"),
]:
    rest = args[1:]
    CASES += [
        Case(fn, (J_nan, *rest), {}, name, "NaN in J"),
        Case(fn, (J[0], *rest), {}, name, "1-D J"),
        Case(fn, (np.zeros((O, 0)), *rest), {}, name, "empty J"),
        Case(fn, ("J", *rest), {}, name, "string J"),
        Case(fn, (J.astype(complex), *rest), {}, name, "complex J"),
    ]
for fn in (ge.pleiotropy, ge.polygenicity, ge.neutrality, ge.genome_null_space, ge.density):
    CASES += [
        Case(fn, (J,), {"rtol": -1.0}, "rtol", "negative rtol"),
        Case(fn, (J,), {"rtol": np.nan}, "rtol", "NaN rtol"),
        Case(fn, (J,), {"rtol": "small"}, "rtol", "string rtol"),
    ]
CASES += [
    Case(ge.density, (J_nan,), {}, "A", "NaN"),
    Case(ge.density, (np.zeros((0, 3)),), {}, "A", "empty"),
    # the metric side
    Case(ge.check_covariance, (np.array([[1.0, 0.5], [0.0, 1.0]]),), {}, "M", "not symmetric"),
    Case(ge.check_covariance, (np.array([[1.0, 2.0], [2.0, 1.0]]),), {}, "M", "not positive semi-definite"),
    Case(ge.check_covariance, (np.ones((2, 3)),), {}, "M", "not square"),
    Case(ge.check_covariance, (np.ones((2, 2, 2)),), {}, "M", "3-D"),
    Case(ge.check_covariance, (np.array([1.0, -1.0]),), {}, "M", "negative diagonal"),
    Case(ge.check_covariance, (np.array([[np.nan, 0.0], [0.0, 1.0]]),), {}, "M", "NaN"),
    Case(ge.check_covariance, (np.eye(2),), {"dim": 3}, "M", "wrong dim"),
    Case(ge.check_covariance, (np.eye(2),), {"dim": 2.5}, "dim", "float dim"),
    Case(ge.check_covariance, (np.eye(2),), {"rtol": 0.0}, "rtol", "rtol 0"),
    Case(ge.check_covariance, (np.zeros((0, 0)),), {}, "M", "empty"),
    Case(ge.check_covariance, (None,), {}, "M", "None"),
    Case(ge.g_matrix, (J, np.eye(4)), {}, "M", "M of the wrong size"),
    Case(ge.g_matrix, (J, "identity"), {}, "M", "string M"),
    Case(ge.g_matrix, (J, -np.eye(P)), {}, "M", "negative definite M"),
    Case(ge.breeders_prediction, (J, M, np.ones(O + 1)), {}, "beta", "beta of the wrong length"),
    Case(ge.breeders_prediction, (J, M, np.full(O, np.inf)), {}, "beta", "inf beta"),
    Case(ge.breeders_prediction, (J, M, np.ones((O, 1))), {}, "beta", "2-D beta"),
    Case(ge.whitening_factor, (np.ones((3, 2)),), {}, "M", "not square"),
    Case(ge.whitening_factor, (M,), {"rtol": 2.0}, "rtol", "rtol above 1"),
    Case(ge.whitened_jacobian, (J, np.eye(P + 1)), {}, "M", "M of the wrong size"),
    # the population
    Case(ge.genotype_phenotype_map, ("f", params, x), {}, "f", "f not callable"),
    Case(ge.genotype_phenotype_map, (lambda p, xx: f(p, xx)[:, 0], params, x), {}, "(N, C)", "model returns (N,): the old check could never fire"),
    Case(ge.genotype_phenotype_map, (lambda p, xx: f(p, xx)[None], params, x), {}, "(N, C)", "model returns 3-D"),
    Case(ge.genotype_phenotype_map, (f, {"layer1": params["layer1"], "layer2": {"b": params["layer2"]["b"]}}, x), {}, "params", "params that do not fit the model"),
    Case(ge.genotype_phenotype_map, (f, jax.tree_util.tree_map(lambda a: a * np.nan, params), x), {}, "params", "NaN params"),
    Case(ge.genotype_phenotype_map, (f, jax.tree_util.tree_map(lambda a: a.astype(jnp.int32), params), x), {}, "params", "integer params"),
    Case(ge.genotype_phenotype_map, (f, params, np.full((3, 2), np.nan)), {}, "x", "NaN x"),
    Case(ge.genotype_phenotype_map, (f, params, x[:0]), {}, "x", "empty x"),
    Case(ge.genotype_phenotype_map, (f, params, np.float64(1.0)), {}, "x", "scalar x"),
    Case(ge.sample_population, (M,), {"key": 0, "size": 20}, "key", "int key"),
    Case(ge.sample_population, (M,), {"key": key, "size": 21}, "size", "odd size with antithetic pairs"),
    Case(ge.sample_population, (M,), {"key": key, "size": 20.0}, "size", "float size"),
    Case(ge.sample_population, (M,), {"key": key, "size": 4}, "size", "too small for exact moments"),
    Case(ge.sample_population, (M,), {"key": key, "size": 1}, "size", "size 1"),
    Case(ge.sample_population, (-M,), {"key": key, "size": 20}, "M", "negative definite M"),
    Case(ge.sample_population, (M,), {"key": key, "size": 20, "antithetic": "yes"}, "antithetic", "antithetic not a bool"),
    Case(ge.sample_population, (M,), {"key": key, "size": 20, "exact_moments": 1}, "exact_moments", "exact_moments not a bool"),
    Case(ge.directional_fitness, (np.ones((2, 2)),), {}, "direction", "2-D direction"),
    Case(ge.directional_fitness, (np.array([1.0, np.nan]),), {}, "direction", "NaN direction"),
    Case(ge.directional_fitness, (np.ones(0),), {}, "direction", "empty direction"),
    Case(ge.stabilising_fitness, (np.zeros(2), -1.0), {}, "width", "negative width"),
    Case(ge.stabilising_fitness, (np.zeros(2), np.inf), {}, "width", "infinite width"),
    Case(ge.stabilising_fitness, (np.zeros(2), "1"), {}, "width", "string width"),
    Case(ge.stabilising_fitness, (np.full(2, np.nan), 1.0), {}, "optimum", "NaN optimum"),
    Case(ge.stabilising_gradient, (np.zeros(2), np.eye(2), np.zeros(3), 1.0), {}, "optimum", "optimum of the wrong length"),
    Case(ge.stabilising_gradient, (np.zeros(2), np.eye(3), np.zeros(2), 1.0), {}, "phenotype_covariance", "covariance of the wrong size"),
    Case(ge.stabilising_gradient, (np.zeros(2), np.eye(2), np.zeros(2), 0.0), {}, "width", "zero width"),
    Case(ge.stabilising_gradient, (np.zeros((2, 1)), np.eye(2), np.zeros(2), 1.0), {}, "mean_phenotype", "2-D mean"),
    Case(ge.selection_weights, (np.array([0.0, np.nan]),), {}, "log_fitness_values", "NaN"),
    Case(ge.selection_weights, (np.zeros((2, 2)),), {}, "log_fitness_values", "2-D"),
    Case(ge.selection_weights, (np.zeros(0),), {}, "log_fitness_values", "empty"),
    Case(ge.response_to_selection, ("phen", np.zeros(P), deviations, fitness), {}, "phenotype", "phenotype not callable"),
    Case(ge.response_to_selection, (phen, np.zeros(P), deviations, None), {}, "log_fitness", "log_fitness not callable"),
    Case(ge.response_to_selection, (phen, np.zeros(P + 1), deviations, fitness), {}, "deviations", "deviations do not match theta_bar"),
    Case(ge.response_to_selection, (phen, np.zeros(P), deviations[:, :, None], fitness), {}, "deviations", "3-D deviations"),
    Case(ge.response_to_selection, (phen, np.full(P, np.nan), deviations, fitness), {}, "theta_bar", "NaN theta_bar"),
    Case(ge.response_to_selection, (lambda t: jnp.outer(t, t), np.zeros(P), deviations, fitness), {}, "phenotype", "phenotype returns a matrix"),
    Case(ge.response_to_selection, (lambda t: jnp.log(t - 10.0), np.zeros(P), deviations, ge.directional_fitness(np.ones(P))), {}, "phenotype", "phenotype returns NaN"),
    Case(ge.response_to_selection, (phen, np.zeros(P), deviations, lambda z_: z_), {}, "log_fitness", "log_fitness returns (N, O)"),
    Case(ge.response_to_selection, (phen, np.zeros(P), deviations, lambda z_: z_[:, 0] * np.nan), {}, "log_fitness", "log_fitness returns NaN"),
    # ML metrics
    Case(ge.gradient_covariance, (np.ones((1, 4)),), {}, "per_example", "one example"),
    Case(ge.gradient_covariance, (np.ones(4),), {}, "per_example", "1-D"),
    Case(ge.gradient_covariance, (np.full((3, 2), np.nan),), {}, "per_example", "NaN"),
    Case(ge.adam_metric, (np.eye(4), np.ones(3)), {}, "second_moment", "wrong length"),
    Case(ge.adam_metric, (np.eye(4), -np.ones(4)), {}, "second_moment", "negative second moment"),
    Case(ge.adam_metric, (np.eye(4), np.zeros(4)), {"eps": 0.0}, "second_moment", "singular preconditioner"),
    Case(ge.adam_metric, (np.eye(4), np.ones(4)), {"eps": -1.0}, "eps", "negative eps"),
    Case(ge.adam_metric, (np.ones((4, 3)), np.ones(4)), {}, "covariance", "non-square covariance"),
    # the dictionary
    Case(ge.block_modularity, (G, [[0, 1], [1, 2]]), {}, "blocks", "overlapping blocks"),
    Case(ge.block_modularity, (G, [[0, 1]]), {}, "blocks", "blocks that do not cover"),
    Case(ge.block_modularity, (G, [[0, 5], [1, 2]]), {}, "blocks", "index out of range"),
    Case(ge.block_modularity, (G, [[0.0, 1.0], [2.0]]), {}, "blocks", "float indices"),
    Case(ge.block_modularity, (G, np.zeros(O + 1)), {}, "blocks", "labels of the wrong length"),
    Case(ge.block_modularity, (G, "ab"), {}, "blocks", "string blocks"),
    Case(ge.block_modularity, (G[:2], [[0], [1]]), {}, "G", "non-square G"),
    Case(ge.block_modularity, (G_inf, [[0], [1, 2]]), {}, "G", "inf in G"),
    Case(ge.block_modularity, (np.zeros((2, 2)), [[0], [1]]), {"correlation": False}, "G", "zero G"),
    Case(ge.block_modularity, (-np.eye(2), [[0], [1]]), {}, "G", "negative variances"),
    Case(ge.block_modularity, (G, [[0], [1, 2]]), {"correlation": "yes"}, "correlation", "correlation not a bool"),
    Case(ge.constraints, (np.array([[1.0, 2.0], [2.0, 1.0]]),), {}, "G", "indefinite G"),
    Case(ge.constraints, (G_inf,), {}, "G", "inf"),
    Case(ge.constraints, (G,), {"rtol": 1.5}, "rtol", "rtol above 1"),
    Case(ge.phenotype_null_space, (np.ones((2, 3)),), {}, "G", "non-square"),
    Case(ge.phenotype_null_space, (G,), {"rtol": -0.1}, "rtol", "negative rtol"),
    Case(ge.pushforward, (np.eye(3), np.ones((2, 4))), {}, "readout_jacobian", "readout does not act on G"),
    Case(ge.pushforward, (np.ones((3, 2)), np.ones((2, 3))), {}, "G", "non-square G"),
    Case(ge.pushforward, (np.eye(3), np.full((2, 3), np.nan)), {}, "readout_jacobian", "NaN readout"),
    Case(ge.pushforward, (np.eye(3), np.ones(3)), {}, "readout_jacobian", "1-D readout"),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_bad_input(case):
    run_case(case)


def test_coverage():
    check_coverage(ge, CASES)


def test_good_inputs_still_work():
    ge.g_matrix(J, M)
    ge.breeders_prediction(J, None, beta)
    phenotype, theta, _ = ge.genotype_phenotype_map(f, params, x)
    assert np.asarray(phenotype(jnp.asarray(theta))).shape == (3 * 2,)
    out = ge.response_to_selection(phen, np.zeros(P), deviations, ge.directional_fitness(np.ones(O)))
    assert np.all(np.isfinite(out["response"]))
    assert ge.block_modularity(G, np.array([0, 0, 1])) <= 1.0
