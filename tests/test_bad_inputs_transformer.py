"""Bad-input table for helpers.transformer: every public function answers bad input with a
TypeError/ValueError that names the argument."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import transformer as tf
from tests._badinput import Case, check_coverage, run_case

P = 5
SIZES = dict(d_model=4, n_heads=2, d_head=2, d_mlp=6)
PARAMS = tf.init_params(jax.random.PRNGKey(0), P, **SIZES)
X = tf.one_hot_inputs(P)
TOK = tf.tokens(P)
NAN_PARAMS = {**PARAMS, "W_in": PARAMS["W_in"].at[0, 0].set(jnp.nan)}
INT_PARAMS = {**PARAMS, "W_out": jnp.ones(PARAMS["W_out"].shape, jnp.int32)}
BAD_SHAPE = {**PARAMS, "W_O": PARAMS["W_O"][:, :1]}
MISSING = {k: v for k, v in PARAMS.items() if k != "pos"}
EVEN = tf.init_params(jax.random.PRNGKey(0), 4, **SIZES)
X_NAN = X.copy()
X_NAN[0, 0, 0] = np.nan
POWER = np.array([1.0, 0.5, 0.1, 0.05])
LOGITS = np.zeros((P * P, P))
BASIS = np.linalg.qr(np.random.default_rng(0).normal(size=(P * P, 3)))[0]
TABLES = np.random.default_rng(0).normal(size=(P, P, 2))

CASES = [
    # tokens, one_hot_inputs, split, fourier_basis
    Case(tf.tokens, (1,), {}, "p", "p below 2"),
    Case(tf.tokens, (5.0,), {}, "p", "float p"),
    Case(tf.one_hot_inputs, (P,), {"dtype": np.int32}, "dtype", "integer dtype"),
    Case(tf.one_hot_inputs, ("5",), {}, "p", "string p"),
    Case(tf.split, (P, 1.5, 0), {}, "train_fraction", "fraction above 1"),
    Case(tf.split, (P, 0.01, 0), {}, "train_fraction", "no training pair"),
    Case(tf.split, (P, 0.5, -1), {}, "seed", "negative seed"),
    Case(tf.split, (1, 0.5, 0), {}, "p", "p below 2"),
    Case(tf.fourier_basis, (4,), {}, "p", "even p"),
    Case(tf.fourier_basis, (2,), {}, "p", "p below 3"),
    # init_params
    Case(tf.init_params, (0, P), SIZES, "key", "int key"),
    Case(tf.init_params, (jax.random.PRNGKey(0), 1), SIZES, "p", "p below 2"),
    Case(tf.init_params, (jax.random.PRNGKey(0), P), {**SIZES, "d_model": 0}, "d_model", "zero d_model"),
    Case(tf.init_params, (jax.random.PRNGKey(0), P), {**SIZES, "n_heads": 1.5}, "n_heads", "float n_heads"),
    Case(tf.init_params, (jax.random.PRNGKey(0), P), {**SIZES, "dtype": jnp.int32}, "dtype", "integer dtype"),
    # apply, apply_tokens, neuron_activations
    Case(tf.apply, (MISSING, X), {}, "params", "missing key"),
    Case(tf.apply, (list(PARAMS.values()), X), {}, "params", "list params"),
    Case(tf.apply, (INT_PARAMS, X), {}, "params", "integer leaf"),
    Case(tf.apply, (BAD_SHAPE, X), {}, "params", "inconsistent shapes"),
    Case(tf.apply, (NAN_PARAMS, X), {}, "params", "NaN in params"),
    Case(tf.apply, (PARAMS, X[:, :2]), {}, "x must", "two positions"),
    Case(tf.apply, (PARAMS, X[..., :P]), {}, "x must", "vocabulary without '='"),
    Case(tf.apply, (PARAMS, X[0]), {}, "x must", "no batch axis"),
    Case(tf.apply, (PARAMS, X[:0]), {}, "x must", "empty batch"),
    Case(tf.apply, (PARAMS, X_NAN), {}, "x must", "NaN in x"),
    Case(tf.apply, (PARAMS, "x"), {}, "x", "string x"),
    Case(tf.apply_tokens, (PARAMS, TOK[:, :2]), {}, "tokens", "two tokens"),
    Case(tf.apply_tokens, (PARAMS, TOK.astype(np.float32)), {}, "tokens", "float tokens"),
    Case(tf.apply_tokens, (PARAMS, TOK + P), {}, "tokens", "token id above p"),
    Case(tf.apply_tokens, (PARAMS, TOK[:0]), {}, "tokens", "empty batch"),
    Case(tf.apply_tokens, (MISSING, TOK), {}, "params", "missing key"),
    Case(tf.neuron_activations, (PARAMS, -TOK), {}, "tokens", "negative token ids"),
    Case(tf.neuron_activations, (NAN_PARAMS, TOK), {}, "params", "NaN in params"),
    # train_runs
    Case(tf.train_runs, (2, [0]), {}, "p", "p below 3"),
    Case(tf.train_runs, (P, []), {}, "seeds", "no seeds"),
    Case(tf.train_runs, (P, [0, 0]), {}, "seeds", "repeated seed"),
    Case(tf.train_runs, (P, [-1]), {}, "seeds", "negative seed"),
    Case(tf.train_runs, (P, [0.5]), {}, "seeds", "float seed"),
    Case(tf.train_runs, (P, [0]), {"d_mlp": 0}, "d_mlp", "zero d_mlp"),
    Case(tf.train_runs, (P, [0]), {"train_fraction": 1.0}, "train_fraction", "no test pair"),
    Case(tf.train_runs, (P, [0]), {"lr": 0.0}, "lr", "zero learning rate"),
    Case(tf.train_runs, (P, [0]), {"weight_decay": -1.0}, "weight_decay", "negative weight decay"),
    Case(tf.train_runs, (P, [0]), {"beta2": 1.0}, "beta2", "beta2 of 1"),
    Case(tf.train_runs, (P, [0]), {"epochs": 15, "record_every": 10}, "epochs", "not a multiple"),
    Case(tf.train_runs, (P, [0]), {"record_every": 0}, "record_every", "zero record_every"),
    Case(tf.train_runs, (P, [0]), {"epochs": 20, "record_every": 10, "snapshot_at": [5]}, "snapshot_at", "snapshot off the grid"),
    Case(tf.train_runs, (P, [0]), {"epochs": 20, "record_every": 10, "snapshot_at": [30]}, "snapshot_at", "snapshot past the end"),
    Case(tf.train_runs, (P, [0]), {"snapshot_at": 10}, "snapshot_at", "int snapshot_at"),
    # spectra and key frequencies
    Case(tf.embedding_spectrum, (MISSING,), {}, "params", "missing key"),
    Case(tf.embedding_spectrum, (EVEN,), {}, "p", "even p"),
    Case(tf.neuron_spectra, (EVEN,), {}, "p", "even p"),
    Case(tf.neuron_spectra, (NAN_PARAMS,), {}, "params", "NaN in params"),
    Case(tf.torus_frequency_shares, (TABLES[:, :3],), {}, "tables", "not square"),
    Case(tf.torus_frequency_shares, (np.zeros((4, 4, 2)),), {}, "tables", "even p"),
    Case(tf.torus_frequency_shares, (TABLES[..., 0],), {}, "tables", "2-D tables"),
    Case(tf.torus_frequency_shares, (np.full((P, P, 1), np.nan),), {}, "tables", "NaN tables"),
    Case(tf.key_frequencies, (-POWER,), {}, "power", "negative power"),
    Case(tf.key_frequencies, (POWER[:2],), {}, "power", "too few frequencies"),
    Case(tf.key_frequencies, (np.array([1.0, 1.0, 0.0]),), {}, "power", "zero power"),
    Case(tf.key_frequencies, (np.ones((2, 3)),), {}, "power", "2-D power"),
    # families, rotation
    Case(tf.symmetric_family, (P, "sum"), {}, "kind", "unknown kind"),
    Case(tf.symmetric_family, (6,), {}, "p", "even p"),
    Case(tf.symmetric_family, (P,), {"perm": [0, 1, 2, 3, 3]}, "perm", "not a permutation"),
    Case(tf.symmetric_family, (P,), {"perm": np.arange(4)}, "perm", "wrong length"),
    Case(tf.frequency_content, (BASIS[:10], P), {}, "basis", "wrong number of rows"),
    Case(tf.frequency_content, (BASIS[:, 0], P), {}, "basis", "1-D basis"),
    Case(tf.frequency_content, (BASIS, P), {"perm": [1, 1, 2, 3, 4]}, "perm", "not a permutation"),
    Case(tf.frequency_rotation, (BASIS[:10], P), {}, "basis", "wrong number of rows"),
    Case(tf.frequency_rotation, (np.full_like(BASIS, np.nan), P), {}, "basis", "NaN basis"),
    Case(tf.frequency_rotation, (BASIS, 2), {}, "p", "p below 3"),
    # progress measures
    Case(tf.logit_projection, (LOGITS[:, :3], P, [1]), {"keep": True}, "logits", "wrong class count"),
    Case(tf.logit_projection, (LOGITS, P, [3]), {"keep": True}, "frequencies", "frequency above p//2"),
    Case(tf.logit_projection, (LOGITS, P, [1, 1]), {"keep": False}, "frequencies", "repeated frequency"),
    Case(tf.logit_projection, (LOGITS, P, [1]), {"keep": "yes"}, "keep", "string keep"),
    Case(tf.logit_projection, (np.zeros((16, 4)), 4, [1]), {"keep": True}, "p", "even p"),
    Case(tf.progress_measures, (PARAMS, [0, 0, 1], [1]), {}, "train_idx", "repeated index"),
    Case(tf.progress_measures, (PARAMS, [0, P * P], [1]), {}, "train_idx", "index out of range"),
    Case(tf.progress_measures, (PARAMS, [0, 1], [0]), {}, "frequencies", "frequency 0"),
    Case(tf.progress_measures, (MISSING, [0, 1], [1]), {}, "params", "missing key"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case):
    run_case(case)


def test_every_public_function_has_a_case():
    check_coverage(tf, CASES)
