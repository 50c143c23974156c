"""Bad input to helpers.tms: every public function answers with a TypeError/ValueError that
names the argument (issue 12, item 4; machinery in tests/_badinput.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import tms

from _badinput import Case, check_coverage, run_case

jax.config.update("jax_enable_x64", True)

N, NF, NH = 6, 5, 2
KEY = jax.random.PRNGKey(0)
X = tms.make_data(N, NF, 0.3, key=KEY, dtype=jnp.float64)
P = tms.init_params(NF, NH, key=jax.random.PRNGKey(1), dtype=jnp.float64)
W = tms.importance(NF)
X_nan = X.at[0, 1].set(jnp.nan)
X_inf = X.at[2, 0].set(jnp.inf)
X_int = np.ones((N, NF), dtype=np.int64)
P_nan = {"w": P["w"].at[0, 0].set(jnp.nan), "b": P["b"]}
P_int = {"w": np.ones((NH, NF), dtype=np.int32), "b": P["b"]}
P_list = {"w": np.asarray(P["w"]).tolist(), "b": P["b"]}
P_bad_b = {"w": P["w"], "b": P["b"][:3]}
P_missing = {"w": P["w"]}
P_extra = {"w": P["w"], "b": P["b"], "c": P["b"]}
G = tms.closed_form_dual(P, X)
G_asym = G + np.triu(np.ones_like(G), 1)
U = np.linalg.qr(np.random.default_rng(0).standard_normal((N * NF, 4)))[0]
F = tms.feature_indicator(np.asarray(X))
COS = tms.alignment(U, F)
ragged = [[1.0, 2.0], [3.0]]

CASES = [
    # importance
    Case(tms.importance, (0,), {}, "n_features", "n = 0"),
    Case(tms.importance, (5.0,), {}, "n_features", "float n"),
    Case(tms.importance, (5, 1.5), {}, "decay", "decay > 1"),
    Case(tms.importance, (5, 0.0), {}, "decay", "decay 0"),
    Case(tms.importance, (5, float("nan")), {}, "decay", "decay NaN"),
    Case(tms.importance, (True,), {}, "n_features", "a bool"),
    # make_data
    Case(tms.make_data, (0, 5, 0.5), {"key": KEY}, "n_points", "N = 0"),
    Case(tms.make_data, (10, 5, 1.0), {"key": KEY}, "sparsity", "S = 1"),
    Case(tms.make_data, (10, 5, -0.1), {"key": KEY}, "sparsity", "S < 0"),
    Case(tms.make_data, (10, 5, "0.5"), {"key": KEY}, "sparsity", "S a string"),
    Case(tms.make_data, (10, 5, 0.5), {"key": 0}, "key", "an int key"),
    Case(tms.make_data, (10, 5, 0.5), {"key": KEY, "dtype": jnp.int32}, "dtype", "integer dtype"),
    Case(tms.make_data, (10, 5, 0.5), {"key": KEY, "normalize": "yes"}, "normalize", "normalize a string"),
    # init_params
    Case(tms.init_params, (5, 6), {"key": KEY}, "n_hidden", "m > n"),
    Case(tms.init_params, (5, 0), {"key": KEY}, "n_hidden", "m = 0"),
    Case(tms.init_params, (5, 2), {"key": None}, "key", "no key"),
    Case(tms.init_params, (5, 2), {"key": KEY, "dtype": "int8"}, "dtype", "integer dtype"),
    # apply
    Case(tms.apply, (P, X[:, :4]), {}, "x", "wrong number of features"),
    Case(tms.apply, (P_missing, X), {}, "params", "params without b"),
    Case(tms.apply, (P_extra, X), {}, "params", "params with an extra leaf"),
    Case(tms.apply, (P_bad_b, X), {}, "params['b']", "b of the wrong length"),
    Case(tms.apply, (P_int, X), {}, "params['w']", "integer weights"),
    Case(tms.apply, (P_list, X), {}, "params['w']", "weights as a list"),
    Case(tms.apply, (P, X_nan), {}, "x", "NaN input"),
    Case(tms.apply, (P, X[0]), {}, "x", "one point without a batch axis"),
    Case(tms.apply, (P, X_int), {}, "x", "integer input"),
    Case(tms.apply, ([P["w"], P["b"]], X), {}, "params", "params as a list"),
    # weighted_mse
    Case(tms.weighted_mse, (P, X, W[:3]), {}, "weights", "weights of the wrong length"),
    Case(tms.weighted_mse, (P, X, -W), {}, "weights", "negative weights"),
    Case(tms.weighted_mse, (P, X_inf, W), {}, "x", "inf input"),
    Case(tms.weighted_mse, (P_nan, X, W), {}, "params['w']", "NaN weights of the model"),
    # train_tms
    Case(tms.train_tms, (X, 2), {"key": KEY, "weights": W[:3], "steps": 1}, "weights", "weights of the wrong length"),
    Case(tms.train_tms, (X, 6), {"key": KEY, "weights": W, "steps": 1}, "n_hidden", "m > n"),
    Case(tms.train_tms, (X_nan, 2), {"key": KEY, "weights": W, "steps": 1}, "x", "NaN data"),
    Case(tms.train_tms, (X, 2), {"key": KEY, "weights": W, "steps": 0}, "steps", "no steps"),
    Case(tms.train_tms, (X, 2), {"key": KEY, "weights": W, "steps": 1, "lr": -1.0}, "lr", "negative lr"),
    Case(tms.train_tms, (X[None], 2), {"key": KEY, "weights": W, "steps": 1}, "x", "3-d data"),
    # train_many
    Case(tms.train_many, (X, 2), {"keys": jax.random.split(KEY, 1), "weights": W, "steps": 1}, "x", "2-d data"),
    Case(tms.train_many, (jnp.stack([X, X]), 2), {"keys": jax.random.split(KEY, 3), "weights": W, "steps": 1},
         "keys", "one key too many"),
    Case(tms.train_many, (jnp.stack([X, X]), 6), {"keys": jax.random.split(KEY, 2), "weights": W, "steps": 1},
         "n_hidden", "m > n"),
    Case(tms.train_many, (jnp.stack([X, X_nan]), 2), {"keys": jax.random.split(KEY, 2), "weights": W, "steps": 1},
         "x", "NaN in one dataset"),
    Case(tms.train_many, (jnp.stack([X, X]), 2), {"keys": jax.random.split(KEY, 2), "weights": W, "steps": 5,
                                                   "record_at": [7]}, "record_at", "snapshot after the end"),
    Case(tms.train_many, (jnp.stack([X, X]), 2), {"keys": jax.random.split(KEY, 2), "weights": W, "steps": 5,
                                                   "record_at": 3}, "record_at", "record_at an int"),
    Case(tms.train_many, (np.ones((2, N, NF), dtype=np.int32), 2), {"keys": jax.random.split(KEY, 2), "weights": W,
                                                                  "steps": 1}, "x", "integer data"),
    # represented
    Case(tms.represented, (P_missing,), {}, "params", "params without b"),
    Case(tms.represented, (P,), {"threshold": "high"}, "threshold", "threshold a string"),
    Case(tms.represented, (P_nan,), {}, "params['w']", "NaN weights"),
    # closed_form_entk
    Case(tms.closed_form_entk, (P, X[:, :4]), {}, "x1", "wrong number of features"),
    Case(tms.closed_form_entk, (P, X, X[:, :3]), {}, "x2", "x2 with the wrong number of features"),
    Case(tms.closed_form_entk, (P, X_nan), {}, "x1", "NaN input"),
    Case(tms.closed_form_entk, (P, X[:0]), {}, "x1", "empty batch"),
    Case(tms.closed_form_entk, (P_missing, X), {}, "params", "params without b"),
    Case(tms.closed_form_entk, (P, X), {"bias": 1}, "bias", "bias an int"),
    # dual_kernel
    Case(tms.dual_kernel, ("apply", P, X), {}, "f", "f a string"),
    Case(tms.dual_kernel, (tms.apply, P, X), {"output_weights": np.ones(4)}, "output_weights", "wrong length"),
    Case(tms.dual_kernel, (tms.apply, P, X), {"output_weights": -np.ones(NF)}, "output_weights", "negative"),
    Case(tms.dual_kernel, (tms.apply, P_nan, X), {}, "params", "NaN weights"),
    Case(tms.dual_kernel, (tms.apply, P, X_inf), {}, "x", "inf input"),
    Case(tms.dual_kernel, (tms.apply, P, X), {"batch_size": 0}, "batch_size", "batch_size 0"),
    Case(tms.dual_kernel, (tms.apply, P_bad_b, X), {}, "params['b']", "params that do not fit the model"),
    Case(tms.dual_kernel, (lambda p, x: tms.apply(p, x)[:, 0], P, X), {}, "f(params, x)", "f returns (N,)"),
    Case(tms.dual_kernel, (tms.apply, P, X[:0]), {}, "x", "empty batch"),
    # closed_form_dual
    Case(tms.closed_form_dual, (P_bad_b, X), {}, "params['b']", "b of the wrong length"),
    Case(tms.closed_form_dual, (P, X), {"output_weights": -np.ones(NF)}, "output_weights", "negative weights"),
    Case(tms.closed_form_dual, (P, X), {"output_weights": np.full(NF, np.nan)}, "output_weights", "NaN weights"),
    Case(tms.closed_form_dual, (P, X_int), {}, "x", "integer input"),
    # flattened_eigenpairs
    Case(tms.flattened_eigenpairs, (tms.apply, P, X), {"k": -1}, "k", "negative k"),
    Case(tms.flattened_eigenpairs, (tms.apply, P, X), {"k": 1000}, "k", "k above the rank bound"),
    Case(tms.flattened_eigenpairs, (tms.apply, P, X), {"k": 2.0}, "k", "float k"),
    Case(tms.flattened_eigenpairs, (tms.apply, P, X), {"k": 1, "gram": np.eye(3)}, "gram", "gram of the wrong size"),
    Case(tms.flattened_eigenpairs, (tms.apply, P, X), {"k": 1, "gram": G_asym}, "gram", "gram not symmetric"),
    Case(tms.flattened_eigenpairs, (tms.apply, P, X), {"k": 2, "n_values": 1}, "n_values", "n_values < k"),
    Case(tms.flattened_eigenpairs, (tms.apply, P, X), {"k": 1, "output_weights": np.ones(3)}, "output_weights",
         "weights of the wrong length"),
    Case(tms.flattened_eigenpairs, (tms.apply, {"w": jnp.zeros((NH, NF)), "b": jnp.zeros(NF)}, X), {"k": 1},
         "k", "k above the number of nonzero eigenvalues (all outputs off)"),
    # feature_indicator
    Case(tms.feature_indicator, (np.ones(5),), {}, "x", "1-d"),
    Case(tms.feature_indicator, (X_nan,), {}, "x", "NaN"),
    Case(tms.feature_indicator, (ragged,), {}, "x", "ragged list"),
    Case(tms.feature_indicator, (np.zeros((0, 3)),), {}, "x", "empty"),
    # project_out
    Case(tms.project_out, (F, F[:-1]), {}, "controls", "one array instead of a list"),
    Case(tms.project_out, (F, [F[:-1]]), {}, "controls[0]", "control of another shape"),
    Case(tms.project_out, (F, []), {}, "controls", "no controls"),
    Case(tms.project_out, (np.full_like(F, np.nan), [F]), {}, "indicator", "NaN indicator"),
    Case(tms.project_out, (F, [F * np.nan]), {}, "controls[0]", "NaN control"),
    # alignment
    Case(tms.alignment, (np.full((N * NF, 2), np.nan), F), {}, "eigenvectors", "NaN eigenvectors (cosine 0 before)"),
    Case(tms.alignment, (U, F[:-1]), {}, "indicator", "rows that do not match"),
    Case(tms.alignment, (U[:, 0], F), {}, "eigenvectors", "1-d eigenvectors"),
    Case(tms.alignment, (np.zeros((N * NF, 2)), F), {}, "eigenvectors", "zero eigenvectors"),
    Case(tms.alignment, (U, np.zeros_like(F)), {}, "indicator", "all-zero indicator"),
    Case(tms.alignment, (U, np.where(F != 0, np.inf, 0.0)), {}, "indicator", "inf indicator"),
    # alignment_scores
    Case(tms.alignment_scores, (np.zeros((0, 3)),), {}, "cos", "empty"),
    Case(tms.alignment_scores, (-COS,), {}, "cos", "negative cosines"),
    Case(tms.alignment_scores, (COS * 3,), {}, "cos", "cosines above 1"),
    Case(tms.alignment_scores, (COS[0],), {}, "cos", "1-d"),
    Case(tms.alignment_scores, (np.full_like(COS, np.nan),), {}, "cos", "NaN"),
    Case(tms.alignment_scores, (COS,), {"threshold": 2.0}, "threshold", "threshold above 1"),
    # feature_rayleigh
    Case(tms.feature_rayleigh, (P, X[:, :2]), {}, "x", "wrong number of features"),
    Case(tms.feature_rayleigh, (P, X), {"output_weights": np.ones(2)}, "output_weights", "wrong length"),
    Case(tms.feature_rayleigh, (P_nan, X), {}, "params['w']", "NaN weights"),
    Case(tms.feature_rayleigh, (P, X), {"bias": "yes"}, "bias", "bias a string"),
    # block_top_eigenvalues
    Case(tms.block_top_eigenvalues, (P, X_nan), {}, "x", "NaN input"),
    Case(tms.block_top_eigenvalues, (P_int, X), {}, "params['w']", "integer weights"),
    Case(tms.block_top_eigenvalues, (P, X), {"bias": None}, "bias", "bias None"),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_bad_input(case):
    run_case(case)


def test_every_public_function_is_covered():
    check_coverage(tms, CASES)
