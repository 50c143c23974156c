"""The factorised (structured) eNTK equals the generic per-example-Jacobian eNTK.

Reference computations: the generic path of ``helpers.ntk`` (per-example Jacobians contracted
over parameters), a Jacobian built by hand with ``jax.jacfwd`` on one example at a time, and the
closed form of the modular-addition class-mean kernel (seed 002 App. B). All in float64.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

jax.config.update("jax_enable_x64", True)

from helpers import modular, ntk, structured  # noqa: E402
from helpers.models import make_mlp  # noqa: E402

RTOL = 1e-10


def _rel(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-300))


def _inputs(n, d, seed):
    return jax.random.normal(jax.random.PRNGKey(seed), (n, d), jnp.float64)


@pytest.mark.parametrize(
    "activation, bias, same",
    [("tanh", True, False), ("relu", False, True), ("sin", True, True)],
)
def test_deep_mlp_matches_generic(activation, bias, same):
    f, params = make_mlp([4, 9, 7, 6, 3], key=jax.random.PRNGKey(3), activation=activation, bias=bias, dtype=jnp.float64)
    args = (_inputs(8, 4, 1),) if same else (_inputs(8, 4, 1), _inputs(5, 4, 2))
    full = ntk.entk(f, params, *args, method="structured")
    assert _rel(full, ntk.entk(f, params, *args, method="generic")) < RTOL
    cm = ntk.class_mean_entk(f, params, *args, method="structured")
    assert _rel(cm, ntk.class_mean(full)) < RTOL


def test_layerwise_matches_generic_and_sums_to_total():
    f, params = make_mlp([3, 8, 8, 2], key=jax.random.PRNGKey(0), activation="tanh", dtype=jnp.float64)
    x = _inputs(7, 3, 0)
    groups = {"first": ["layer1"], "rest": ["layer2", "layer3"]}
    for g, collapse in [(None, None), (groups, "class_mean")]:
        fast = ntk.layerwise_entk(f, params, x, groups=g, collapse=collapse, method="structured")
        slow = ntk.layerwise_entk(f, params, x, groups=g, collapse=collapse, method="generic")
        assert list(fast) == list(slow)
        for name in fast:
            assert _rel(fast[name], slow[name]) < RTOL
    per_layer = ntk.layerwise_entk(f, params, x)
    assert _rel(sum(per_layer.values()), ntk.entk(f, params, x, method="generic")) < RTOL


def test_against_hand_built_jacobian():
    # independent of helpers.ntk: jacfwd on one example at a time, contracted by hand
    f, params = make_mlp([3, 6, 5, 2], key=jax.random.PRNGKey(7), activation="gelu", dtype=jnp.float64)
    x = _inputs(4, 3, 5)
    per_example = jax.jit(jax.vmap(jax.jacfwd(lambda p, xi: f(p, xi[None])[0]), in_axes=(None, 0)))
    jac = np.concatenate([l.reshape(len(x), 2, -1) for l in jax.tree_util.tree_leaves(per_example(params, x))], axis=2)
    reference = np.einsum("aip,bjp->abij", jac, jac)
    assert _rel(ntk.entk(f, params, x, method="structured"), reference) < RTOL


def test_modular_model_closed_form():
    # f_i = (1/n) sum_k W2_ik h_k^2,  h = W1 x / sqrt(2p)  (helpers.modular.apply)
    p, width = 7, 16
    data = modular.make_data(p, seed=0, dtype=np.float64)
    params = modular.init_params(jax.random.PRNGKey(1), p, width, dtype=jnp.float64)
    x = data.x
    h = x @ np.asarray(params["W1"]).T / np.sqrt(2 * p)
    s = (np.asarray(params["W2"]) ** 2).sum(axis=0)
    layer1 = (x @ x.T) / (2 * p) * (4.0 / width**2) * ((h * s) @ h.T) / p
    layer2 = (h**2) @ (h**2).T / width**2
    plan = structured.analyze(modular.apply, params, x)
    assert set(plan.summary().values()) == {"dense, diagonal"}
    kernels = ntk.layerwise_entk(modular.apply, params, x, collapse="class_mean", method="structured")
    assert _rel(kernels["W1"], layer1) < RTOL
    assert _rel(kernels["W2"], layer2) < RTOL
    full = ntk.entk(modular.apply, params, x[:12], method="structured")
    assert _rel(full, ntk.entk(modular.apply, params, x[:12], method="generic")) < RTOL


def _pytree_model(params, x):
    # a tuple/list/dict pytree; W on the left of a dot (h = W a), a shared weight,
    # an einsum with a transpose, and a bias used through broadcasting
    w_in, (w_mid, b_mid), extra = params
    h = jnp.tanh(jnp.einsum("od,nd->no", w_in, x))
    h = jax.nn.softplus(h @ w_mid.T + b_mid)
    h = h + 0.3 * jnp.tanh(h @ extra["shared"]) @ extra["shared"].T
    return jnp.einsum("nk,kc->nc", h, extra["out"])


def test_arbitrary_pytree_model():
    keys = jax.random.split(jax.random.PRNGKey(4), 6)
    params = (
        jax.random.normal(keys[0], (6, 3), jnp.float64),
        [jax.random.normal(keys[1], (5, 6), jnp.float64) / 2, 0.1 * jax.random.normal(keys[2], (5,), jnp.float64)],
        {"shared": jax.random.normal(keys[3], (5, 5), jnp.float64) / 2, "out": jax.random.normal(keys[4], (5, 4), jnp.float64)},
    )
    x = _inputs(6, 3, 9)
    plan = structured.analyze(_pytree_model, params, x)
    kinds = list(plan.summary().values())
    assert kinds.count("generic") == 2  # the bias and the weight used twice
    assert "dense" in kinds
    assert _rel(ntk.entk(_pytree_model, params, x, method="structured"), ntk.entk(_pytree_model, params, x, method="generic")) < RTOL


def _sequence_model(params, x):
    # x: (N, T, d); a dense map on every position (R = T free rows), mean over positions
    h = jnp.tanh(x @ params["w"])
    return h.mean(axis=1) @ params["v"]


def test_dense_map_with_extra_rows():
    params = {
        "w": jax.random.normal(jax.random.PRNGKey(0), (3, 6), jnp.float64),
        "v": jax.random.normal(jax.random.PRNGKey(1), (6, 2), jnp.float64),
    }
    x = jax.random.normal(jax.random.PRNGKey(2), (5, 4, 3), jnp.float64)
    plan = structured.analyze(_sequence_model, params, x)
    assert plan.summary() == {"['v']": "dense, diagonal", "['w']": "dense, diagonal"}
    for collapse in [None, "class_mean"]:
        fast = ntk.layerwise_entk(_sequence_model, params, x, collapse=collapse, method="structured")
        slow = ntk.layerwise_entk(_sequence_model, params, x, collapse=collapse, method="generic")
        for name in fast:
            assert _rel(fast[name], slow[name]) < RTOL


def test_deep_layers_are_not_diagonal():
    f, params = make_mlp([3, 5, 5, 2], key=jax.random.PRNGKey(0), activation="tanh", bias=False, dtype=jnp.float64)
    kinds = structured.analyze(f, params, _inputs(2, 3, 0)).summary()
    # layer 1's sensitivity passes through another tanh: it depends on the input
    assert kinds == {"['layer1']['w']": "dense", "['layer2']['w']": "dense, diagonal", "['layer3']['w']": "dense, diagonal"}


def test_jitted_sub_function_and_no_dense_leaf_fall_back():
    @jax.jit
    def layer(w, x):
        return jnp.tanh(x @ w)

    def f(params, x):
        return layer(params["w"], x) @ params["v"]

    params = {"w": jax.random.normal(jax.random.PRNGKey(0), (3, 4), jnp.float64), "v": jnp.ones((4, 2), jnp.float64)}
    x = _inputs(4, 3, 1)
    assert structured.analyze(f, params, x).summary()["['w']"] == "generic"
    assert _rel(ntk.entk(f, params, x, method="structured"), ntk.entk(f, params, x, method="generic")) < RTOL

    def g(params, x):  # no dot_general with a parameter at all
        return jnp.tanh(x * params["scale"])[:, :2]

    q = {"scale": jnp.arange(1.0, 4.0)}
    assert structured.analyze(g, q, x).dense == []
    assert _rel(ntk.entk(g, q, x), ntk.entk(g, q, x, method="generic")) < RTOL


def test_chunking_and_float32():
    f, params = make_mlp([4, 8, 3], key=jax.random.PRNGKey(2), activation="relu")
    x = jax.random.normal(jax.random.PRNGKey(0), (11, 4), jnp.float32)
    whole = ntk.class_mean_entk(f, params, x, method="structured")
    chunked = ntk.class_mean_entk(f, params, x, method="structured", block_bytes=200)
    assert whole.dtype == np.float32
    assert _rel(chunked, whole) < 1e-6
    assert _rel(whole, ntk.class_mean_entk(f, params, x, method="generic")) < 1e-5


def test_bad_options():
    f, params = make_mlp([2, 3, 1], key=jax.random.PRNGKey(0))
    x = jnp.ones((2, 2))
    with pytest.raises(ValueError, match="method"):
        ntk.entk(f, params, x, method="fast")
    with pytest.raises(ValueError, match="collapse"):
        structured.structured_kernels(f, params, x, collapse="trace")
    with pytest.raises(ValueError, match="labels"):
        structured.structured_kernels(f, params, x, labels=["a"])


def test_cache_sees_new_closures():
    # compiled functions are cached per model; a model closing over a new value is traced afresh
    f0, params = make_mlp([3, 5, 2], key=jax.random.PRNGKey(0), dtype=jnp.float64)
    x = _inputs(4, 3, 1)

    def scaled(s):
        return lambda q, z: f0(q, z) * s

    k1 = ntk.entk(scaled(1.0), params, x, method="structured")
    k2 = ntk.entk(scaled(2.0), params, x, method="structured")
    assert _rel(k2, 4.0 * k1) < RTOL
    moved = jax.tree_util.tree_map(lambda w: 1.5 * w, params)  # same model, new parameters
    assert _rel(ntk.entk(f0, moved, x, method="structured"), ntk.entk(f0, moved, x, method="generic")) < RTOL
