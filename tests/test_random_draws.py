"""``helpers.models.normal`` / ``uniform`` give exactly ``jax.random.normal`` / ``uniform``.

They draw a power-of-two flat sample and keep its first ``prod(shape)`` numbers, which is only
right if element i of a draw depends on the counter i alone (threefry with
``jax_threefry_partitionable``, the pinned JAX's default). These tests compare the bits on odd
shapes, both precisions, typed and legacy keys, and check the fall-backs (inside ``jit``, and with
a generator that is not prefix-stable) and the compilation saving itself.
"""

import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import models

SHAPES = [(), (7,), (17, 3), (1025,), (2, 3, 5), (0, 4)]
# (x64, dtype, key): each precision once, a typed key once (every reference draw is a compilation)
SETTINGS = [
    (False, None, jax.random.PRNGKey(11)),
    (False, jnp.bfloat16, jax.random.PRNGKey(12)),
    (True, jnp.float64, jax.random.PRNGKey(13)),
    (True, None, jax.random.key(14)),
]


def _same(a, b):
    return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("x64, dtype, key", SETTINGS, ids=["f32", "bf16", "f64", "typed-key"])
def test_bit_for_bit_equal_to_jax_random(x64, dtype, key):
    with jax.enable_x64(x64):
        want = float if dtype is None else dtype
        for shape in SHAPES:
            assert _same(models.normal(key, shape, dtype), jax.random.normal(key, shape, want)), shape
        for shape in SHAPES[1:3]:
            assert _same(models.uniform(key, shape, dtype, -2.0, 3.0), jax.random.uniform(key, shape, want, -2.0, 3.0)), shape


def test_inside_jit_and_vmap_it_is_jax_random():
    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    want = jax.vmap(lambda k: jax.random.normal(k, (4, 5)))(keys)
    assert _same(jax.jit(jax.vmap(lambda k: models.normal(k, (4, 5))))(keys), want)
    assert _same(jax.vmap(lambda k: models.normal(k, (4, 5)))(keys), want)
    typed = jax.random.split(jax.random.key(0), 2)
    assert _same(jax.vmap(lambda k: models.uniform(k, (3, 7)))(typed), jax.vmap(lambda k: jax.random.uniform(k, (3, 7)))(typed))


def test_a_generator_that_is_not_prefix_stable_is_drawn_as_it_is():
    # rbg draws are not a function of the element's counter alone: the bucketed draw would differ
    key = jax.random.key(5, impl="rbg")
    for shape in [(3,), (17, 3)]:
        assert _same(models.normal(key, shape), jax.random.normal(key, shape))
    with jax.threefry_partitionable(False):
        key = jax.random.PRNGKey(5)
        assert _same(models.normal(key, (17, 3)), jax.random.normal(key, (17, 3)))


def _compilations(draw, shapes, caplog):
    caplog.clear()
    with caplog.at_level(logging.WARNING), jax.log_compiles(True):
        for shape in shapes:
            draw(shape).block_until_ready()
    return sum("Compiling" in r.getMessage() and "_normal" in r.getMessage() for r in caplog.records)


def test_many_shapes_share_few_compiled_programs(caplog):
    """40 new shapes of 2000-3000 numbers: at most one new compiled draw (the 4096 bucket), where
    jax.random.normal compiles one per shape (the control, on 5 more new shapes, shows that the
    count sees compilations)."""
    key = jax.random.PRNGKey(1)
    shapes = [(w, 11) for w in range(190, 230)]
    assert _compilations(lambda sh: models.normal(key, sh, jnp.float32), shapes, caplog) <= 1
    # under an eager vmap over keys (how chapters initialise a model per seed), too
    keys = jax.random.split(key, 3)
    vshapes = [(w, 17) for w in range(190, 200)]
    assert _compilations(lambda sh: jax.vmap(lambda k: models.normal(k, sh, jnp.float32))(keys), vshapes, caplog) <= 1
    control = [(w, 13) for w in range(190, 195)]
    assert _compilations(lambda sh: jax.random.normal(key, sh, jnp.float32), control, caplog) == len(control)
