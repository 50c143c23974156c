"""Bad-input table for helpers.modular (issue 12 item 4): every public function answers bad
input with a TypeError/ValueError that names the argument."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import modular
from tests._badinput import Case, check_coverage, run_case

P, N = 5, 4
DATA = modular.make_data(P)
PARAMS = modular.init_params(jax.random.PRNGKey(0), P, N)
X, Y = DATA.x, DATA.y
W1, W2 = PARAMS["W1"], PARAMS["W2"]
NAN_W1 = {"W1": W1.at[0, 0].set(jnp.nan), "W2": W2}
INT_W1 = {"W1": jnp.ones((N, 2 * P), jnp.int32), "W2": W2}
X_NAN = X.copy()
X_NAN[0, 0] = np.nan
Y_NAN = Y.copy()
Y_NAN[1, 1] = np.inf
RUNS = modular.train_runs(P, [0], width=N, epochs=2, snapshot_every=1)
STEPS = np.arange(4)
ACC = np.array([0.0, 0.2, 0.9, 1.0])

CASES = [
    # make_data
    Case(modular.make_data, (1,), {}, "p must", "p below 2"),
    Case(modular.make_data, (5.0,), {}, "p must", "float p"),
    Case(modular.make_data, (True,), {}, "p must", "bool p"),
    Case(modular.make_data, (P,), {"train_fraction": 0.0}, "train_fraction", "empty train split"),
    Case(modular.make_data, (P,), {"train_fraction": 1.0}, "train_fraction", "empty test split"),
    Case(modular.make_data, (P,), {"train_fraction": float("nan")}, "train_fraction", "NaN fraction"),
    Case(modular.make_data, (P,), {"train_fraction": 0.01}, "train_fraction", "rounds to 0 train pairs"),
    Case(modular.make_data, (P,), {"train_fraction": "0.5"}, "train_fraction", "string fraction"),
    Case(modular.make_data, (P,), {"seed": -1}, "seed", "negative seed"),
    Case(modular.make_data, (P,), {"dtype": np.int32}, "dtype", "integer dtype"),
    # init_params
    Case(modular.init_params, (0, P, N), {}, "key", "int key"),
    Case(modular.init_params, (np.zeros(3, np.uint32), P, N), {}, "key", "wrong key shape"),
    Case(modular.init_params, (jax.random.PRNGKey(0), 1, N), {}, "p must", "p below 2"),
    Case(modular.init_params, (jax.random.PRNGKey(0), P, 0), {}, "width", "zero width"),
    Case(modular.init_params, (jax.random.PRNGKey(0), P, 2.0), {}, "width", "float width"),
    Case(modular.init_params, (jax.random.PRNGKey(0), P, N), {"dtype": jnp.int32}, "dtype", "integer dtype"),
    # apply
    Case(modular.apply, ({"W1": W1}, X), {}, "params", "missing W2"),
    Case(modular.apply, ([W1, W2], X), {}, "params", "list params"),
    Case(modular.apply, (INT_W1, X), {}, "params", "integer W1"),
    Case(modular.apply, ({"W1": W1, "W2": W2[:, :3]}, X), {}, "params", "mismatched n"),
    Case(modular.apply, ({"W1": W1[:, :7], "W2": W2}, X), {}, "params", "W1 not (n, 2p)"),
    Case(modular.apply, (NAN_W1, X), {}, "params", "NaN in params"),
    Case(modular.apply, (PARAMS, X[:, :7]), {}, "x must", "wrong feature count"),
    Case(modular.apply, (PARAMS, X[0]), {}, "x must", "1-D x"),
    Case(modular.apply, (PARAMS, X[:0]), {}, "x must", "empty batch"),
    Case(modular.apply, (PARAMS, X_NAN), {}, "x must", "NaN in x"),
    Case(modular.apply, (PARAMS, "x"), {}, "x must", "string x"),
    Case(modular.apply, (PARAMS, [[1.0, 0.0]]), {}, "x must", "list of wrong width"),
    # mse_loss, accuracy
    Case(modular.mse_loss, (PARAMS, X, Y[:, :3]), {}, "y must", "wrong class count"),
    Case(modular.mse_loss, (PARAMS, X, Y[:10]), {}, "y must", "mismatched batch"),
    Case(modular.mse_loss, (PARAMS, X, Y_NAN), {}, "y must", "inf in y"),
    Case(modular.mse_loss, (PARAMS, X[:, :3], Y), {}, "x must", "wrong feature count"),
    Case(modular.mse_loss, ({"W1": W1}, X, Y), {}, "params", "missing W2"),
    Case(modular.accuracy, (PARAMS, X, Y[:10]), {}, "y must", "mismatched batch"),
    Case(modular.accuracy, (PARAMS, X_NAN, Y), {}, "x must", "NaN in x"),
    Case(modular.accuracy, (NAN_W1, X, Y), {}, "params", "NaN in params"),
    # train_model
    Case(modular.train_model, (DATA.x,), {}, "data", "array instead of ModularData"),
    Case(modular.train_model, (DATA,), {"width": 0}, "width", "zero width"),
    Case(modular.train_model, (DATA,), {"epochs": -1}, "epochs", "negative epochs"),
    Case(modular.train_model, (DATA,), {"lr": 0.0}, "lr", "zero learning rate"),
    Case(modular.train_model, (DATA,), {"lr": float("nan")}, "lr", "NaN learning rate"),
    Case(modular.train_model, (DATA,), {"weight_decay": -0.1}, "weight_decay", "negative weight decay"),
    Case(modular.train_model, (DATA,), {"seed": 1.5}, "seed", "float seed"),
    Case(modular.train_model, (DATA,), {"record_every": 0}, "record_every", "zero record_every"),
    Case(modular.train_model, (DATA,), {"epochs": 3, "record_at": [5]}, "record_at", "record_at past the end"),
    Case(modular.train_model, (DATA,), {"keep_params": "yes"}, "keep_params", "string flag"),
    # train_runs
    Case(modular.train_runs, (1, [0]), {}, "p must", "p below 2"),
    Case(modular.train_runs, (P, []), {}, "seeds", "no seeds"),
    Case(modular.train_runs, (P, [0, 0]), {}, "seeds", "repeated seed"),
    Case(modular.train_runs, (P, [-1]), {}, "seeds", "negative seed"),
    Case(modular.train_runs, (P, [0.5]), {}, "seeds", "float seed"),
    Case(modular.train_runs, (P, 3), {}, "seeds", "scalar seeds"),
    Case(modular.train_runs, (P, [0]), {"width": 0}, "width", "zero width"),
    Case(modular.train_runs, (P, [0]), {"epochs": 0}, "epochs", "zero epochs"),
    Case(modular.train_runs, (P, [0]), {"lr": -1.0}, "lr", "negative learning rate"),
    Case(modular.train_runs, (P, [0]), {"weight_decay": float("inf")}, "weight_decay", "inf weight decay"),
    Case(modular.train_runs, (P, [0]), {"train_fraction": 1.5}, "train_fraction", "fraction above 1"),
    Case(modular.train_runs, (P, [0]), {"epochs": 5, "snapshot_every": 6}, "snapshot_every", "snapshot_every past the end"),
    Case(modular.train_runs, (P, [0]), {"snapshot_every": 0}, "snapshot_every", "zero snapshot_every"),
    Case(modular.train_runs, (P, [0]), {"shuffle_labels": 1}, "shuffle_labels", "int flag"),
    # Runs.snapshot (a method; listed for completeness)
    Case(RUNS.snapshot, (1, 0), {}, "run", "run index out of range"),
    Case(RUNS.snapshot, (0, 7), {}, "epoch", "epoch not recorded"),
    Case(RUNS.snapshot, (0, 1.0), {}, "epoch", "float epoch"),
    # grokking_epoch
    Case(modular.grokking_epoch, (STEPS, ACC[:3]), {}, "test_acc", "mismatched lengths"),
    Case(modular.grokking_epoch, (STEPS, np.array([0.0, np.nan, 0.9, 1.0])), {}, "test_acc", "NaN accuracy"),
    Case(modular.grokking_epoch, (STEPS, ACC * 100), {}, "test_acc", "percent instead of fraction"),
    Case(modular.grokking_epoch, (STEPS[::-1], ACC), {}, "steps", "decreasing steps"),
    Case(modular.grokking_epoch, (STEPS[:, None], ACC[:, None]), {}, "steps", "2-D steps"),
    Case(modular.grokking_epoch, (np.array([]), np.array([])), {}, "steps", "empty"),
    Case(modular.grokking_epoch, (STEPS, ACC), {"threshold": 0.0}, "threshold", "zero threshold"),
    Case(modular.grokking_epoch, (STEPS, ACC), {"threshold": float("nan")}, "threshold", "NaN threshold"),
    Case(modular.grokking_epoch, ("0123", ACC), {}, "steps", "string steps"),
    # closed_form_kernels
    Case(modular.closed_form_kernels, ({"W1": W1}, X), {}, "params", "missing W2"),
    Case(modular.closed_form_kernels, ({"W1": W1, "W2": W2[:, :3]}, X), {}, "params", "mismatched n"),
    Case(modular.closed_form_kernels, (NAN_W1, X), {}, "params", "NaN in params"),
    Case(modular.closed_form_kernels, (INT_W1, X), {}, "params", "integer W1"),
    Case(modular.closed_form_kernels, (PARAMS, X[:, :7]), {}, "x1", "wrong feature count"),
    Case(modular.closed_form_kernels, (PARAMS, X_NAN), {}, "x1", "NaN in x1"),
    Case(modular.closed_form_kernels, (PARAMS, X[:0]), {}, "x1", "empty x1"),
    Case(modular.closed_form_kernels, (PARAMS, X, X[:, :7]), {}, "x2", "wrong feature count"),
    Case(modular.closed_form_kernels, (PARAMS, X, X_NAN), {}, "x2", "NaN in x2"),
    Case(modular.closed_form_kernels, (PARAMS, X), {"collapse": "flat"}, "collapse", "unknown collapse"),
    # expected_kernels_at_init
    Case(modular.expected_kernels_at_init, (1, N), {}, "p must", "p below 2"),
    Case(modular.expected_kernels_at_init, (P, 0), {}, "width", "zero width"),
    Case(modular.expected_kernels_at_init, (P, 1.5), {}, "width", "float width"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_refused_with_a_named_argument(case):
    run_case(case)


def test_every_public_function_has_a_case():
    check_coverage(modular, CASES)


def test_apply_still_traces_under_jit_and_grad():
    """The checks of apply work on traced values (shape checks only), so training and the eNTK
    still differentiate through it."""
    loss = jax.jit(jax.grad(lambda q: modular.mse_loss(q, X, Y)))
    grads = loss(PARAMS)
    assert grads["W1"].shape == W1.shape and np.all(np.isfinite(grads["W1"]))
