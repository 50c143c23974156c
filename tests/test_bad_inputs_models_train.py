"""Bad input to helpers.models and helpers.train: a TypeError/ValueError naming the argument."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from _badinput import Case, check_coverage, run_case

from helpers import models, train

KEY = jax.random.PRNGKey(0)
P = models.mlp_init(KEY, [3, 4, 2])
X = jnp.ones((5, 3))


def _loss(p):
    return jnp.mean(models.mlp_apply(p, X) ** 2)


CASES = [
    Case(models.mlp_init, (0, [3, 4, 2]), {}, "key", "an int instead of a PRNG key"),
    Case(models.mlp_init, (KEY, [3]), {}, "sizes", "one size"),
    Case(models.mlp_init, (KEY, [3, 0, 2]), {}, "sizes", "a zero width"),
    Case(models.mlp_init, (KEY, "34"), {}, "sizes", "a string"),
    Case(models.mlp_init, (KEY, [3, 2.5, 2]), {}, "sizes", "a float width"),
    Case(models.mlp_init, (KEY, [3, 4, 2]), {"parametrization": "mup"}, "parametrization", "unknown parametrization"),
    Case(models.mlp_init, (KEY, [3, 4, 2]), {"dtype": jnp.int32}, "dtype", "integer dtype"),
    Case(models.mlp_init, (KEY, [3, 4, 2]), {"bias": "yes"}, "bias", "bias not a bool"),
    Case(models.normal, (0, (3,)), {}, "key", "an int instead of a PRNG key"),
    Case(models.normal, (KEY, (3, -1)), {}, "shape", "a negative dimension"),
    Case(models.normal, (KEY, "3"), {}, "shape", "a string shape"),
    Case(models.normal, (KEY, (3,), jnp.int32), {}, "dtype", "integer dtype"),
    Case(models.uniform, (KEY, (3,)), {"minval": "0"}, "minval", "a string bound"),
    Case(models.uniform, (KEY, (2.5,)), {}, "shape", "a float dimension"),
    Case(models.mlp_apply, (P, X), {"activation": "swish2"}, "activation", "unknown activation"),
    Case(models.mlp_apply, (P, X), {"parametrization": "x"}, "parametrization", "unknown parametrization"),
    Case(models.mlp_apply, (P, jnp.ones((5, 4))), {}, "params['layer1']['w']", "input of the wrong width"),
    Case(models.mlp_apply, (P, jnp.ones((2, 5, 3))), {}, "x", "a 3-axis input"),
    Case(models.mlp_apply, ({"w": P["layer1"]["w"]}, X), {}, "params", "params not from mlp_init"),
    Case(models.mlp_apply, ([P], X), {}, "params", "a list of params"),
    Case(models.make_mlp, ([3, 4, 2],), {"key": KEY, "activation": "nope"}, "activation", "unknown activation"),
    Case(models.make_mlp, ([3, 4, 2],), {"key": KEY, "output_scale": float("nan")}, "output_scale", "NaN output scale"),
    Case(models.make_mlp, ([3, 4, 2],), {"key": "k"}, "key", "a string key"),
    Case(train.train, (None, P, optax.sgd(0.1), 3), {}, "loss_fn", "loss_fn not callable"),
    Case(train.train, (_loss, P, "sgd", 3), {}, "optimizer", "optimizer not an optax transformation"),
    Case(train.train, (_loss, P, optax.sgd(0.1), -1), {}, "steps", "negative steps"),
    Case(train.train, (_loss, P, optax.sgd(0.1), 2.5), {}, "steps", "fractional steps"),
    Case(train.train, (_loss, P, optax.sgd(0.1), 3), {"record_every": 0}, "record_every", "record_every = 0"),
    Case(train.train, (_loss, P, optax.sgd(0.1), 3), {"record_at": [5]}, "record_at", "a record step past the end"),
    Case(train.train, (_loss, P, optax.sgd(0.1), 3), {"metrics": {"acc": 3}}, "metrics", "a metric that is not a function"),
    Case(train.train, (_loss, jax.tree_util.tree_map(lambda a: a.at[0].set(jnp.nan), P), optax.sgd(0.1), 3), {}, "params", "NaN parameters"),
    Case(train.train, (_loss, P, optax.sgd(1e30), 5), {}, "loss_fn", "a learning rate that diverges"),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_bad_input(case):
    run_case(case)


def test_every_public_function_has_a_case():
    check_coverage(models, CASES)
    check_coverage(train, CASES)
