"""Differential tests of every kernel path of helpers.ntk on a zoo of architectures.

Reference: per-example ``jax.jacrev`` in float64, contracted with ``einsum`` -- computed here,
independently of ``helpers``. Each model (tests/zoo.py) is built from a seed that also draws its
sizes; every method of ``entk``, ``class_mean_entk``, ``layerwise_entk`` (one group per leaf),
``entk_operator`` and ``entk_fn`` must agree with the reference to float64 rounding, on a cross
kernel ``K(x1, x2)`` and on ``K(x1, x1)``, with the default memory budget and with a budget so
small that the generic path must split classes and parameters into blocks. Models that mix
examples must be refused by the per-example kernels and handled exactly by the operator.
"""

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

jax.config.update("jax_enable_x64", True)

import zoo  # noqa: E402

from helpers import ntk  # noqa: E402

# One seed per model by default (seeds, and so sizes, differ between models); set
# ZOO_SEEDS=0,1,2 to run every model with several seeds.
SEEDS = [int(s) for s in os.environ.get("ZOO_SEEDS", "").split(",") if s.strip()]
RTOL = 1e-10  # float64 rounding of sums of a few hundred products, with margin
METHODS = ["auto", "structured", "generic"]


def _single(f):
    return lambda p, xi: f(p, xi[None])[0]


def reference_leaves(f, params, x1, x2):
    """{leaf path: (N1, N2, C, C)} by per-example jacrev."""
    jac = jax.jit(jax.vmap(jax.jacrev(_single(f)), in_axes=(None, 0)))
    j1, j2 = jac(params, x1), jac(params, x2)
    out = {}
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(j1), jax.tree_util.tree_leaves(j2)):
        a = np.asarray(a).reshape(a.shape[0], a.shape[1], -1)
        b = np.asarray(b).reshape(b.shape[0], b.shape[1], -1)
        out[jax.tree_util.keystr(path)] = np.einsum("aip,bjp->abij", a, b)
    return out


def _rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-300))


def _class_mean(k):
    return np.einsum("abii->ab", k) / k.shape[-1]


def _leaf_labels(params):
    return jax.tree_util.tree_map_with_path(lambda p, _: jax.tree_util.keystr(p), params)


CASES = [(name, seed) for name in zoo.ZOO for seed in SEEDS] if SEEDS else [(name, k) for k, name in enumerate(zoo.ZOO)]


@functools.lru_cache(maxsize=None)
def _case(name, seed):
    """One model and its two reference kernels per (model, seed) and test process: the ten tests
    of a model share them (the reference costs about as much as the path under test). No test
    mutates them: jax arrays are immutable and the reference arrays are made read-only."""
    f, params, x1, x2 = zoo.ZOO[name](seed)
    leaves = reference_leaves(f, params, x1, x2)
    same = reference_leaves(f, params, x1, x1)
    for ref in (*leaves.values(), *same.values()):
        ref.flags.writeable = False
    return f, params, x1, x2, leaves, same


@pytest.fixture(params=CASES, ids=lambda v: f"{v[0]}-{v[1]}")
def model(request):
    return _case(*request.param)


@pytest.mark.parametrize("method", METHODS)
def test_entk_and_class_mean(model, method):
    f, params, x1, x2, leaves, same = model
    full = sum(leaves.values())
    full_same = sum(same.values())
    assert _rel(ntk.entk(f, params, x1, x2, method=method), full) < RTOL
    assert _rel(ntk.entk(f, params, x1, method=method), full_same) < RTOL
    assert _rel(ntk.class_mean_entk(f, params, x1, x2, method=method), _class_mean(full)) < RTOL
    assert _rel(ntk.class_mean_entk(f, params, x1, method=method), _class_mean(full_same)) < RTOL


@pytest.mark.parametrize("method", METHODS)
def test_layerwise_one_group_per_leaf(model, method):
    f, params, x1, x2, leaves, _ = model
    labels = _leaf_labels(params)
    got = ntk.layerwise_entk(f, params, x1, x2, groups=labels, method=method)
    assert set(got) == set(leaves)
    for path, ref in leaves.items():
        # a leaf whose kernel is exactly zero (unused) must come back zero, others to rounding
        scale = max(np.abs(ref).max(), max(np.abs(r).max() for r in leaves.values()) * 1e-12)
        assert np.abs(got[path] - ref).max() <= RTOL * scale, path
    cm = ntk.layerwise_entk(f, params, x1, x2, groups=labels, collapse="class_mean", method=method)
    for path, ref in leaves.items():
        scale = max(np.abs(ref).max(), 1e-300)
        assert np.abs(cm[path] - _class_mean(ref)).max() <= RTOL * max(scale, np.abs(_class_mean(sum(leaves.values()))).max()), path


def test_generic_blocks_split_classes_and_parameters(model):
    """A budget of a few kB forces class chunks and parameter slices in the generic path."""
    f, params, x1, x2, leaves, same = model
    full = sum(leaves.values())
    tiny = 2048
    assert _rel(ntk.entk(f, params, x1, x2, method="generic", block_bytes=tiny), full) < RTOL
    assert _rel(ntk.class_mean_entk(f, params, x1, method="generic", block_bytes=tiny), _class_mean(sum(same.values()))) < RTOL


def test_vector_products_path(model, monkeypatch):
    """The NTK-vector-product route of the generic path (chosen by cost for many outputs)."""
    f, params, x1, x2, leaves, _ = model
    monkeypatch.setattr(ntk, "_use_vector_products", lambda *a, **k: True)
    assert _rel(ntk.entk(f, params, x1, x2, method="generic"), sum(leaves.values())) < RTOL


def test_operator(model):
    f, params, x1, _, _, same = model
    full = sum(same.values())
    n, c = full.shape[0], full.shape[2]
    v = np.random.default_rng(0).standard_normal((n * c, 3))
    flat = full.transpose(0, 2, 1, 3).reshape(n * c, n * c)
    op = ntk.entk_operator(f, params, x1)
    assert op.dtype == np.float64
    assert _rel(op @ v, flat @ v) < RTOL
    assert _rel(op @ v[:, 0], flat @ v[:, 0]) < RTOL
    cm = ntk.entk_operator(f, params, x1, collapse="class_mean")
    assert _rel(cm @ v[:n], _class_mean(full) @ v[:n]) < RTOL


@pytest.mark.parametrize("implementation", ["jacobian", "vector_products"])
def test_entk_fn(model, implementation):
    f, params, x1, x2, leaves, same = model
    full = sum(leaves.values())
    kernel = jax.jit(ntk.entk_fn(f, implementation=implementation))
    assert _rel(kernel(params, x1, x2), full) < RTOL
    cm = jax.jit(ntk.entk_fn(f, collapse="class_mean", implementation=implementation))
    assert _rel(cm(params, x1, x2), _class_mean(full)) < RTOL
    diag = ntk.entk_fn(f, diagonal=True, implementation=implementation)
    full_same = sum(same.values())
    assert _rel(diag(params, x1), np.einsum("aaij->aij", full_same)) < RTOL
    tr = ntk.entk_fn(f, diagonal=True, collapse="trace", implementation=implementation)
    assert _rel(tr(params, x1), np.einsum("aaii->a", full_same)) < RTOL


def test_entk_fn_vmaps_over_parameter_sets():
    """vmap over a stack of parameter sets: one kernel per set."""
    f, params, x1, x2 = zoo.ZOO["mlp_bias"](0)
    _, params2, _, _ = zoo.ZOO["mlp_bias"](0)
    params2 = jax.tree_util.tree_map(lambda a: a * 1.1, params2)
    stacked = jax.tree_util.tree_map(lambda a, b: jnp.stack([a, b]), params, params2)
    kernels = jax.vmap(ntk.entk_fn(f, collapse="class_mean"), in_axes=(0, None, None))(stacked, x1, x2)
    assert _rel(kernels[1], _class_mean(sum(reference_leaves(f, params2, x1, x2).values()))) < RTOL


@pytest.mark.parametrize("name", list(zoo.COUPLED))
def test_models_that_mix_examples(name):
    f, params, x1, x2 = zoo.COUPLED[name](0)
    for call in (
        lambda: ntk.entk(f, params, x1),
        lambda: ntk.class_mean_entk(f, params, x1, x2),
        lambda: ntk.layerwise_entk(f, params, x1),
        lambda: ntk.jacobian(f, params, x1),
    ):
        with pytest.raises(ValueError, match="mixes examples"):
            call()
    # the operator differentiates the whole batch: exact against the batch Jacobian
    jac = jax.jacrev(lambda p: f(p, x1).reshape(-1))(params)
    jflat = np.concatenate([np.asarray(a).reshape(a.shape[0], -1) for a in jax.tree_util.tree_leaves(jac)], axis=1)
    v = np.random.default_rng(1).standard_normal(jflat.shape[0])
    assert _rel(ntk.entk_operator(f, params, x1) @ v, jflat @ (jflat.T @ v)) < RTOL


def test_structured_path_is_used_where_it_should_be():
    """The factorised path claims the leaves it can factorise (so the zoo tests exercise it)."""
    expectations = {
        "mlp_bias": {"['layer1']['w']", "['layer2']['w']", "['layer3']['w']"},
        "attention": {"['q']", "['k']", "['v']", "['o']", "['head']"},
        "attention_qk_product": {"['wq']", "['wk']", "['head']"},
        "modular_addition": {"['w1']", "['w2']"},
        "conv1d": {"['dense']"},
        "shared_weights": {"['w_in']", "['w_out']"},
        "embedding_lookup": {"['head']"},
    }
    for name, expected in expectations.items():
        f, params, x1, _ = zoo.ZOO[name](0)
        how = ntk.explain(f, params, x1)
        factorised = {path for path, text in how.items() if text.startswith("factorised")}
        assert factorised == expected, (name, how)
