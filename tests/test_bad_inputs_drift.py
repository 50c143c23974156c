"""Bad input to every public function of helpers.drift gets a TypeError/ValueError naming the argument (issue 12)."""

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from helpers import drift, models

from _badinput import Case, check_coverage, run_case

F, PARAMS = models.make_mlp([3, 5, 2], key=jax.random.PRNGKey(0), dtype=jnp.float64)
X = np.asarray(jax.random.normal(jax.random.PRNGKey(1), (4, 3)))
R = np.ones((4, 2))
NAN = np.full((4, 3), np.nan)
INT_PARAMS = jax.tree_util.tree_map(lambda a: np.asarray(a).astype(np.int32), PARAMS)
WRONG_PARAMS = {"layer1": {"w": np.ones((7, 5)), "b": np.ones(5)}, "layer2": PARAMS["layer2"]}
K = np.diag([4.0, 3.0, 2.0, 1.0])
V = np.eye(4) + np.ones((4, 4)) * 0.1
ASYM = np.array([[1.0, 2.0], [0.0, 1.0]])
LAM = np.array([[3.0, 2.0, 1.0], [3.1, 2.1, 1.2]])
VECS = np.stack([np.eye(3), np.eye(3)])
KERNEL_FN = lambda p: drift.one_hidden_layer_kernel(p, X)
LOSS = lambda p: jnp.sum(models.mlp_apply(p, jnp.asarray(X)) ** 2)
BATCH = jax.tree_util.tree_map(lambda a: jnp.stack([a, a]), PARAMS)
BATCH_LOSS = lambda p, a: jnp.sum((models.mlp_apply(p, jnp.asarray(X)) - a) ** 2)
ARGS = jnp.zeros((2, 4, 2))
KS = np.stack([K, K + 0.1 * V])

CASES = [
    # kernels
    Case(drift.flat_kernel, (F, PARAMS, NAN), {}, "x", "x with NaN"),
    Case(drift.flat_kernel, (F, PARAMS, X[:, :2]), {}, ("params", "x"), "x with the wrong number of features"),
    Case(drift.flat_kernel, (F, WRONG_PARAMS, X), {}, ("params", "x"), "params pytree that does not fit f"),
    Case(drift.flat_kernel, (F, INT_PARAMS, X), {}, "params", "integer params"),
    Case(drift.flat_kernel, ("f", PARAMS, X), {}, "f", "f not callable"),
    Case(drift.flat_kernel, (F, PARAMS, np.zeros((0, 3))), {}, "x", "empty batch"),
    Case(drift.one_hidden_layer_kernel, (PARAMS, X[:, :2]), {}, "x", "x with the wrong number of features"),
    Case(drift.one_hidden_layer_kernel, (PARAMS, NAN), {}, "x", "x with NaN"),
    Case(drift.one_hidden_layer_kernel, (PARAMS, X[0]), {}, "x", "x of rank 1"),
    Case(drift.one_hidden_layer_kernel, ({"layer1": PARAMS["layer1"]}, X), {}, "params", "a one-layer pytree"),
    Case(drift.one_hidden_layer_kernel, (WRONG_PARAMS, X), {}, "params", "mismatched layer widths"),
    Case(drift.one_hidden_layer_kernel, (PARAMS, X), {"activation": "swish"}, "activation", "unknown activation"),
    Case(drift.one_hidden_layer_kernel, (PARAMS, X), {"output_scale": np.nan}, "output_scale", "NaN output scale"),
    Case(drift.infinite_width_kernel, (NAN,), {}, "x", "x with NaN"),
    Case(drift.infinite_width_kernel, (X[0],), {}, "x", "x of rank 1"),
    Case(drift.infinite_width_kernel, (np.zeros((0, 3)),), {}, "x", "empty x"),
    Case(drift.infinite_width_kernel, (X,), {"bias_std": -1.0}, "bias_std", "negative bias_std"),
    Case(drift.infinite_width_kernel, (X,), {"n_outputs": 0}, "n_outputs", "zero outputs"),
    Case(drift.infinite_width_kernel, (X,), {"order": 2.5}, "order", "non-integer order"),
    Case(drift.infinite_width_kernel, (X,), {"activation": "swish"}, "activation", "unknown activation"),
    Case(drift.infinite_width_kernel, ([[1.0, 2.0], [3.0]],), {}, "x", "ragged list"),
    # motion
    Case(drift.kernel_velocity, (F, PARAMS, X, R[:3]), {}, "residual", "residual of the wrong batch"),
    Case(drift.kernel_velocity, (F, PARAMS, X, np.full((4, 2), np.inf)), {}, "residual", "residual with inf"),
    Case(drift.kernel_velocity, (F, PARAMS, X, R.astype(bool)), {}, "residual", "boolean residual"),
    Case(drift.kernel_velocity, (F, WRONG_PARAMS, X, R), {}, ("params", "x"), "mismatched params pytree"),
    Case(drift.kernel_derivative, (KERNEL_FN, PARAMS, {"layer1": PARAMS["layer1"]}), {}, "direction", "direction of another structure"),
    Case(drift.kernel_derivative, (KERNEL_FN, PARAMS, jax.tree_util.tree_map(lambda a: a[..., :1], PARAMS)), {}, "direction", "direction of other shapes"),
    Case(drift.kernel_derivative, (KERNEL_FN, PARAMS, jax.tree_util.tree_map(lambda a: jnp.full_like(a, jnp.nan), PARAMS)), {}, "direction", "NaN direction"),
    Case(drift.kernel_derivative, (KERNEL_FN, PARAMS, PARAMS), {"step": 0.0}, "step", "zero step"),
    Case(drift.kernel_derivative, ("kernel", PARAMS, PARAMS), {}, "kernel_fn", "kernel_fn not callable"),
    Case(drift.kernel_derivative, (lambda p: jnp.ones(3), PARAMS, PARAMS), {}, "kernel_fn", "kernel_fn returning a vector"),
    Case(drift.map_curvature_contraction, (F, PARAMS, NAN), {}, "x", "x with NaN"),
    Case(drift.map_curvature_contraction, (F, INT_PARAMS, X), {}, "params", "integer params"),
    Case(drift.velocity_from_contraction, (np.ones((2, 3, 3)), np.ones(2)), {}, "xi", "xi not a cube"),
    Case(drift.velocity_from_contraction, (np.ones((2, 2)), np.ones(2)), {}, "xi", "xi of rank 2"),
    Case(drift.velocity_from_contraction, (np.ones((2, 2, 2)), np.ones(3)), {}, "residual", "residual of the wrong size"),
    Case(drift.velocity_from_contraction, (np.full((2, 2, 2), np.nan), np.ones(2)), {}, "xi", "xi with NaN"),
    # spectra and perturbation theory
    Case(drift.spectra, (np.ones((2, 3)),), {}, "kernels", "non-square kernel"),
    Case(drift.spectra, (ASYM,), {}, "kernels", "asymmetric kernel"),
    Case(drift.spectra, (np.ones(3),), {}, "kernels", "rank-1 input"),
    Case(drift.spectra, (K,), {"k": 5}, "k", "k larger than D"),
    Case(drift.spectra, (np.full((3, 3), np.nan),), {}, "kernels", "NaN kernel"),
    Case(drift.perturbation_rates, (np.ones((2, 3)), np.ones((2, 3))), {}, "kernel", "non-square kernel"),
    Case(drift.perturbation_rates, (ASYM, np.eye(2)), {}, "kernel", "asymmetric kernel"),
    Case(drift.perturbation_rates, (K, np.eye(3)), {}, "velocity", "velocity of another shape"),
    Case(drift.perturbation_rates, (np.diag([2.0, 2.0, 1.0]), np.eye(3)), {"k": 1}, "degenerate", "degenerate top eigenvalue"),
    Case(drift.perturbation_rates, (K, V), {"k": 7}, "k", "k larger than D"),
    Case(drift.subspace_rotation_rate, (K, V, 4), {}, "k", "k equal to D"),
    Case(drift.subspace_rotation_rate, (np.diag([2.0, 1.0, 1.0]), np.eye(3), 2), {}, "gap", "no gap after k"),
    Case(drift.subspace_rotation_rate, (K, np.full((4, 4), np.inf), 1), {}, "velocity", "inf velocity"),
    Case(drift.perturbation_ratio, (K, V, 4), {}, "k", "k equal to D"),
    Case(drift.perturbation_ratio, (K, V, []), {}, "k", "empty list of k"),
    Case(drift.perturbation_ratio, (K, V, 1.5), {}, "k", "non-integer k"),
    Case(drift.perturbation_ratio, (None, V, 1), {}, "kernel", "neither kernel nor spectrum"),
    Case(drift.perturbation_ratio, (K, V, 1), {"spectrum": (np.ones(4), np.eye(4))}, "kernel", "both kernel and spectrum"),
    Case(drift.perturbation_ratio, (None, V, 1), {"spectrum": (np.arange(4.0), np.eye(4))}, "spectrum", "ascending spectrum"),
    Case(drift.perturbation_ratio, (None, V, 1), {"spectrum": (np.ones(4), np.eye(3))}, "spectrum", "spectrum of mismatched shapes"),
    Case(drift.perturbation_ratio, (np.diag([1.0, 0.0, -1.0]), np.eye(3) + 0.1, 2), {}, "positive", "non-positive eigenvalue"),
    Case(drift.timescale_ratio, (LAM[:1], VECS[:1], 1), {}, "eigenvalues", "a single snapshot"),
    Case(drift.timescale_ratio, (LAM, VECS[:, :, :2], 1), {}, "eigenvectors", "eigenvectors of another width"),
    Case(drift.timescale_ratio, (LAM[:, ::-1], VECS, 1), {}, "eigenvalues", "ascending eigenvalues"),
    Case(drift.timescale_ratio, (LAM, VECS, 4), {}, "k", "k larger than the tracked modes"),
    Case(drift.timescale_ratio, (-LAM[:, ::-1], VECS, 1), {}, "positive", "negative eigenvalues"),
    Case(drift.timescale_ratio, (np.full((2, 3), np.nan), VECS, 1), {}, "eigenvalues", "NaN eigenvalues"),
    Case(drift.spectral_speeds, (np.stack([np.eye(3)] * 2), [1.0, 1.0], 1), {}, "times", "times not increasing"),
    Case(drift.spectral_speeds, (KS, [0.0], 1), {}, "times", "one time for two kernels"),
    Case(drift.spectral_speeds, (K, [0.0], 1), {}, "kernels", "a single kernel"),
    Case(drift.spectral_speeds, (KS, [0.0, 1.0], 4), {}, "k", "k equal to D"),
    Case(drift.spectral_speeds, (KS, [0.0, np.nan], 1), {}, "times", "NaN time"),
    Case(drift.principal_angles, (np.ones((3, 1)), np.ones((4, 1))), {}, "basis_b", "bases of different D"),
    Case(drift.principal_angles, (np.ones((3, 2)), np.eye(3)[:, :1]), {}, "basis_a", "rank-deficient basis"),
    Case(drift.principal_angles, (np.ones(3), np.ones((3, 1))), {}, "basis_a", "rank-1 basis"),
    Case(drift.principal_angles, (np.full((3, 1), np.nan), np.ones((3, 1))), {}, "basis_a", "NaN basis"),
    Case(drift.relative_drift, (K, np.eye(3)), {}, "kernel_1", "kernels of different shapes"),
    Case(drift.relative_drift, (K, np.full((4, 4), np.nan)), {}, "kernel_1", "NaN kernel_1"),
    Case(drift.relative_drift, (np.full((4, 4), np.inf), K), {}, "kernel_0", "inf kernel_0"),
    Case(drift.relative_drift, (np.zeros((4, 4)), K), {}, "kernel_0", "zero reference"),
    Case(drift.relative_drift, (np.zeros((0, 0)), np.zeros((0, 0))), {}, "kernel_0", "empty kernels"),
    Case(drift.eigenspace_change, (K, K, 1.5), {}, "k", "non-integer k"),
    Case(drift.eigenspace_change, (K, np.eye(3), 1), {}, "kernel_after", "kernels of different shapes"),
    Case(drift.eigenspace_change, (K, -K, 1), {}, "positive", "negative eigenvalues"),
    Case(drift.eigenspace_change, (ASYM, ASYM, 1), {}, "kernel_before", "asymmetric kernel"),
    Case(drift.loglog_slope, ([1.0, 2.0], np.ones((1, 2))), {}, "values", "a single seed"),
    Case(drift.loglog_slope, ([1.0, 2.0, 4.0], np.ones((3, 2))), {}, "values", "values of the wrong width count"),
    Case(drift.loglog_slope, ([1.0, -2.0], np.ones((3, 2))), {}, "widths", "negative width"),
    Case(drift.loglog_slope, ([1.0, 2.0], -np.ones((3, 2))), {}, "values", "negative values"),
    Case(drift.loglog_slope, ([1.0, 2.0], np.ones((3, 2))), {"level": 1.0}, "level", "level 1"),
    Case(drift.loglog_slope, ([1.0, 2.0], np.full((3, 2), np.nan)), {}, "values", "NaN values"),
    Case(drift.confidence_interval, ([1.0],), {}, "values", "a single draw"),
    Case(drift.confidence_interval, (np.ones((2, 2)),), {}, "values", "rank-2 values"),
    Case(drift.confidence_interval, ([1.0, np.inf],), {}, "values", "inf value"),
    Case(drift.confidence_interval, ([1.0, 2.0],), {"level": 0.0}, "level", "level 0"),
    # training and recording
    Case(drift.train_recording, (BATCH_LOSS, BATCH, optax.sgd(0.1), [0, 2]), {"args": jnp.zeros((3, 4, 2))}, "args", "args of another batch size"),
    Case(drift.train_recording, (BATCH_LOSS, BATCH, optax.sgd(0.1), [0, -1]), {"args": ARGS}, "record_at", "negative step"),
    Case(drift.train_recording, (BATCH_LOSS, BATCH, optax.sgd(0.1), [0.5]), {"args": ARGS}, "record_at", "fractional step"),
    Case(drift.train_recording, (BATCH_LOSS, BATCH, "sgd", [0, 2]), {"args": ARGS}, "optimizer", "optimizer not optax"),
    Case(drift.train_recording, (BATCH_LOSS, {"a": jnp.ones((2, 3)), "b": jnp.ones((3, 3))}, optax.sgd(0.1), [1]), {"args": ARGS}, "params", "params leaves of different batch sizes"),
    Case(drift.train_recording, (BATCH_LOSS, BATCH, optax.sgd(0.1), [1]), {"args": jnp.zeros((2, 4, 5))}, ("params", "args"), "args that do not fit the loss"),
    Case(drift.train_recording, (BATCH_LOSS, jax.tree_util.tree_map(lambda a: a.at[0].set(jnp.nan), BATCH), optax.sgd(0.1), [1]), {"args": ARGS}, "params", "NaN params"),
    Case(drift.train_recording, (lambda p: jnp.ones(2), BATCH, optax.sgd(0.1), [1]), {}, "loss_fn", "loss_fn returning a vector"),
    Case(drift.train_to_loss, (BATCH_LOSS, BATCH, [0.1, -0.1]), {"target_fraction": 0.5, "max_steps": 5, "args": ARGS}, "lr", "negative lr"),
    Case(drift.train_to_loss, (BATCH_LOSS, BATCH, [0.1, 0.1, 0.1]), {"target_fraction": 0.5, "max_steps": 5, "args": ARGS}, "lr", "lr of another batch size"),
    Case(drift.train_to_loss, (BATCH_LOSS, BATCH, 0.1), {"target_fraction": 1.5, "max_steps": 5, "args": ARGS}, "target_fraction", "fraction above 1"),
    Case(drift.train_to_loss, (BATCH_LOSS, BATCH, 0.1), {"target_fraction": 0.5, "max_steps": 0, "args": ARGS}, "max_steps", "zero steps"),
    Case(drift.train_to_loss, (BATCH_LOSS, BATCH, np.nan), {"target_fraction": 0.5, "max_steps": 5, "args": ARGS}, "lr", "NaN lr"),
    Case(drift.train_to_loss, ("loss", BATCH, 0.1), {"target_fraction": 0.5, "max_steps": 5}, "loss_fn", "loss_fn not callable"),
    Case(drift.kernel_trajectory, (F, [], X), {}, "params_list", "no snapshots"),
    Case(drift.kernel_trajectory, (F, PARAMS, X), {}, "params_list", "a pytree instead of a list"),
    Case(drift.kernel_trajectory, (F, [PARAMS], NAN), {}, "x", "x with NaN"),
    Case(drift.train_with_kernels, (F, LOSS, PARAMS, optax.sgd(0.1), 2, NAN), {}, "x", "x with NaN"),
    Case(drift.train_with_kernels, (F, LOSS, WRONG_PARAMS, optax.sgd(0.1), 2, X), {}, ("params", "x"), "params that do not fit f"),
    Case(drift.train_with_kernels, (F, LOSS, PARAMS, optax.sgd(0.1), -1, X), {}, "steps", "negative steps"),
    # output curvature
    Case(drift.softmax_output_hessian, (np.ones(3),), {}, "logits", "logits of rank 1"),
    Case(drift.softmax_output_hessian, (np.full((2, 3), np.nan),), {}, "logits", "NaN logits"),
    Case(drift.softmax_output_hessian, (np.zeros((0, 3)),), {}, "logits", "no examples"),
    Case(drift.residual_dynamics, (np.eye(3), np.eye(2), np.ones(3), [1.0]), {}, "output_hessian", "mismatched output_hessian"),
    Case(drift.residual_dynamics, (np.eye(3), np.eye(3), np.ones(2), [1.0]), {}, "residual_0", "residual_0 of the wrong size"),
    Case(drift.residual_dynamics, (np.eye(3), np.eye(3), np.full(3, np.nan), [1.0]), {}, "residual_0", "NaN residual_0"),
    Case(drift.residual_dynamics, (np.full((3, 3), np.inf), np.eye(3), np.ones(3), [1.0]), {}, "kernel", "inf kernel"),
    Case(drift.residual_dynamics, (np.eye(3), np.eye(3), np.ones(3), [1.5]), {"discrete": True}, "times", "fractional steps"),
    Case(drift.residual_dynamics, (np.eye(3), np.eye(3), np.ones(3), [np.nan]), {}, "times", "NaN time"),
    Case(drift.residual_dynamics, (np.eye(3), np.eye(3), np.ones(3), [1.0]), {"lr": np.inf}, "lr", "inf lr"),
    Case(drift.residual_dynamics, (np.eye(3), np.eye(3), np.ones(3), [1.0]), {"discrete": "yes"}, "discrete", "non-boolean discrete"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case):
    run_case(case)


def test_every_public_function_has_a_case():
    check_coverage(drift, CASES)
