"""A zoo of architectures the book does not use, for the differential tests of helpers.ntk.

Each entry builds ``(f, params, x1, x2)`` from a seed: sizes are drawn from the seed too, so
different seeds exercise different shapes. Everything is float64. ``COUPLED`` lists models
whose outputs mix examples (the per-example kernels must refuse them).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from helpers.models import make_mlp

F64 = jnp.float64


def _rng(seed):
    return np.random.default_rng(seed)


def _w(rng, *shape, scale=None):
    fan_in = shape[0] if len(shape) > 1 else 1
    s = scale if scale is not None else 1.0 / np.sqrt(max(fan_in, 1))
    return jnp.asarray(rng.standard_normal(shape) * s, F64)


def _x(rng, n, *shape):
    return jnp.asarray(rng.standard_normal((n,) + shape), F64)


def _sizes(rng):
    n1 = int(rng.integers(3, 6))
    n2 = int(rng.integers(2, 5))
    d = int(rng.integers(2, 5))
    h = int(rng.integers(3, 7))
    c = int(rng.integers(2, 5))
    return n1, n2, d, h, c


def mlp_bias(seed):
    rng = _rng(seed)
    n1, n2, d, h, c = _sizes(rng)
    f, params = make_mlp([d, h, h + 1, c], key=jax.random.PRNGKey(seed), activation="tanh", bias=True, dtype=F64)
    return f, params, _x(rng, n1, d), _x(rng, n2, d)


def shared_weights(seed):
    rng = _rng(seed)
    n1, n2, d, h, c = _sizes(rng)
    params = {"w_in": _w(rng, d, h), "w_shared": _w(rng, h, h), "w_out": _w(rng, h, c)}

    def f(p, x):
        a = jnp.tanh(x @ p["w_in"])
        a = jnp.tanh(a @ p["w_shared"])
        a = jnp.tanh(a @ p["w_shared"])  # the same weight twice
        return a @ p["w_out"]

    return f, params, _x(rng, n1, d), _x(rng, n2, d)


def residual(seed):
    rng = _rng(seed)
    n1, n2, d, h, c = _sizes(rng)
    params = {"embed": _w(rng, d, h), "block": {"w1": _w(rng, h, h), "w2": _w(rng, h, h), "b": _w(rng, h, scale=0.1)}, "head": _w(rng, h, c)}

    def f(p, x):
        z = x @ p["embed"]
        z = z + jnp.tanh(z @ p["block"]["w1"] + p["block"]["b"]) @ p["block"]["w2"]
        return z @ p["head"]

    return f, params, _x(rng, n1, d), _x(rng, n2, d)


def conv1d(seed):
    rng = _rng(seed)
    n1, n2, _, h, c = _sizes(rng)
    length, cin, cout, k = int(rng.integers(5, 8)), 2, 3, 3
    params = {"kernel": _w(rng, k, cin, cout, scale=0.5), "dense": _w(rng, (length - k + 1) * cout, c)}

    def f(p, x):  # x: (N, L, Cin)
        y = jax.lax.conv_general_dilated(x, p["kernel"], (1,), "VALID", dimension_numbers=("NWC", "WIO", "NWC"))
        return jnp.tanh(y).reshape(x.shape[0], -1) @ p["dense"]

    return f, params, _x(rng, n1, length, cin), _x(rng, n2, length, cin)


def conv2d(seed):
    rng = _rng(seed)
    n1, n2, _, _, c = _sizes(rng)
    side, cin, cout = int(rng.integers(4, 6)), 2, 2
    params = {"kernel": _w(rng, 2, 2, cin, cout, scale=0.5), "bias": _w(rng, cout, scale=0.1), "dense": _w(rng, (side - 1) ** 2 * cout, c)}

    def f(p, x):  # x: (N, H, W, Cin)
        y = jax.lax.conv_general_dilated(x, p["kernel"], (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return jax.nn.relu(y + p["bias"]).reshape(x.shape[0], -1) @ p["dense"]

    return f, params, _x(rng, n1, side, side, cin), _x(rng, n2, side, side, cin)


def layer_norm(seed):
    rng = _rng(seed)
    n1, n2, d, h, c = _sizes(rng)
    params = {"w1": _w(rng, d, h), "ln": {"scale": 1.0 + _w(rng, h, scale=0.1), "shift": _w(rng, h, scale=0.1)}, "w2": _w(rng, h, c)}

    def f(p, x):
        z = x @ p["w1"]
        mu = z.mean(-1, keepdims=True)
        var = ((z - mu) ** 2).mean(-1, keepdims=True)
        z = (z - mu) / jnp.sqrt(var + 1e-5) * p["ln"]["scale"] + p["ln"]["shift"]
        return jax.nn.gelu(z) @ p["w2"]

    return f, params, _x(rng, n1, d), _x(rng, n2, d)


def einsum_3index(seed):
    rng = _rng(seed)
    n1, n2, d, h, c = _sizes(rng)
    params = {"w": _w(rng, d, h, 2), "v": _w(rng, h, 2, c)}

    def f(p, x):
        z = jnp.tanh(jnp.einsum("bi,ijk->bjk", x, p["w"]))
        return jnp.einsum("bjk,jkc->bc", z, p["v"])

    return f, params, _x(rng, n1, d), _x(rng, n2, d)


def tied_autoencoder(seed):
    rng = _rng(seed)
    n1, n2, d, h, _ = _sizes(rng)
    params = {"w": _w(rng, d, h), "b": _w(rng, h, scale=0.1)}

    def f(p, x):
        return jnp.tanh(x @ p["w"] + p["b"]) @ p["w"].T  # C = d

    return f, params, _x(rng, n1, d), _x(rng, n2, d)


def low_rank(seed):
    rng = _rng(seed)
    n1, n2, d, h, c = _sizes(rng)
    params = {"u": _w(rng, d, 2), "v": _w(rng, 2, c)}

    def f(p, x):
        return x @ (p["u"] @ p["v"])

    return f, params, _x(rng, n1, d), _x(rng, n2, d)


def lora(seed):
    rng = _rng(seed)
    n1, n2, d, h, c = _sizes(rng)
    params = {"w0": _w(rng, d, h), "a": _w(rng, d, 2), "b": _w(rng, 2, h), "head": _w(rng, h, c)}

    def f(p, x):
        return jnp.tanh(x @ (p["w0"] + p["a"] @ p["b"])) @ p["head"]

    return f, params, _x(rng, n1, d), _x(rng, n2, d)


def deep_linear(seed):
    rng = _rng(seed)
    n1, n2, d, h, c = _sizes(rng)
    params = {"w1": _w(rng, d, h), "w2": _w(rng, h, h), "w3": _w(rng, h, c)}

    def f(p, x):
        return x @ (p["w1"] @ p["w2"] @ p["w3"])

    return f, params, _x(rng, n1, d), _x(rng, n2, d)


def bilinear(seed):
    rng = _rng(seed)
    n1, n2, d, h, c = _sizes(rng)
    params = {"w": _w(rng, c, d, d)}

    def f(p, x):
        return jnp.einsum("bi,oij,bj->bo", x, p["w"], x)

    return f, params, _x(rng, n1, d), _x(rng, n2, d)


def multiplicative_gate(seed):
    rng = _rng(seed)
    n1, n2, d, h, c = _sizes(rng)
    params = {"gate": _w(rng, d, h), "value": _w(rng, d, h), "out": _w(rng, h, c)}

    def f(p, x):
        return (jax.nn.sigmoid(x @ p["gate"]) * (x @ p["value"])) @ p["out"]

    return f, params, _x(rng, n1, d), _x(rng, n2, d)


def softmax_output(seed):
    rng = _rng(seed)
    n1, n2, d, h, c = _sizes(rng)
    params = {"w1": _w(rng, d, h), "w2": _w(rng, h, c + 1)}

    def f(p, x):
        return jax.nn.softmax(jax.nn.relu(x @ p["w1"]) @ p["w2"], axis=-1)

    return f, params, _x(rng, n1, d) + 0.1, _x(rng, n2, d) + 0.1


def attention(seed):
    """A single-head attention block over token inputs (N, T, D), mean-pooled, then a head."""
    rng = _rng(seed)
    n1, n2, d, _, c = _sizes(rng)
    t, dh = int(rng.integers(2, 4)), int(rng.integers(2, 4))
    params = {"q": _w(rng, d, dh), "k": _w(rng, d, dh), "v": _w(rng, d, dh), "o": _w(rng, dh, d), "head": _w(rng, d, c)}

    def f(p, x):  # x: (N, T, D)
        q, k, v = x @ p["q"], x @ p["k"], x @ p["v"]
        att = jax.nn.softmax(jnp.einsum("ntd,nsd->nts", q, k) / np.sqrt(dh), axis=-1)
        y = x + jnp.einsum("nts,nsd->ntd", att, v) @ p["o"]
        return y.mean(axis=1) @ p["head"]

    return f, params, _x(rng, n1, t, d), _x(rng, n2, t, d)


def attention_qk_product(seed):
    """Attention scores through the product W_Q W_K^T of two parameters (a bilinear form)."""
    rng = _rng(seed)
    n1, n2, d, _, c = _sizes(rng)
    t = int(rng.integers(2, 4))
    params = {"wq": _w(rng, d, 2), "wk": _w(rng, d, 2), "head": _w(rng, d, c)}

    def f(p, x):
        scores = jnp.einsum("ntd,de,nse->nts", x, p["wq"] @ p["wk"].T, x)
        y = jnp.einsum("nts,nsd->ntd", jax.nn.softmax(scores, axis=-1), x)
        return y[:, -1] @ p["head"]

    return f, params, _x(rng, n1, t, d), _x(rng, n2, t, d)


def embedding_lookup(seed):
    rng = _rng(seed)
    n1, n2, _, h, c = _sizes(rng)
    vocab, t = int(rng.integers(5, 9)), 3
    params = {"embed": _w(rng, vocab, h, scale=1.0), "head": _w(rng, h, c)}

    def f(p, tokens):  # tokens: (N, T) integers
        e = p["embed"][tokens]  # gather
        return jnp.tanh(e.sum(axis=1)) @ p["head"]

    x1 = jnp.asarray(rng.integers(0, vocab, (n1, t)))
    x2 = jnp.asarray(rng.integers(0, vocab, (n2, t)))
    return f, params, x1, x2


def embedding_one_hot(seed):
    rng = _rng(seed)
    n1, n2, _, h, c = _sizes(rng)
    vocab, t = int(rng.integers(5, 9)), 3
    params = {"embed": _w(rng, vocab, h, scale=1.0), "pos": _w(rng, t, h, scale=0.3), "head": _w(rng, h, c)}

    def f(p, tokens):
        e = jax.nn.one_hot(tokens, vocab, dtype=F64) @ p["embed"] + p["pos"]
        return (jax.nn.relu(e) ** 2).mean(axis=1) @ p["head"]

    x1 = jnp.asarray(rng.integers(0, vocab, (n1, t)))
    x2 = jnp.asarray(rng.integers(0, vocab, (n2, t)))
    return f, params, x1, x2


def nested_pytree(seed):
    rng = _rng(seed)
    n1, n2, d, h, c = _sizes(rng)
    params = {"a": [_w(rng, d, h), (_w(rng, h, scale=0.1), _w(rng, h, h))], "b": {"c": _w(rng, h, c)}}

    def f(p, x):
        w1, (b1, w2) = p["a"]
        z = jnp.sin(x @ w1 + b1)
        return jnp.tanh(z @ w2) @ p["b"]["c"]

    return f, params, _x(rng, n1, d), _x(rng, n2, d)


def jitted_submodule(seed):
    rng = _rng(seed)
    n1, n2, d, h, c = _sizes(rng)
    params = {"w1": _w(rng, d, h), "w2": _w(rng, h, c)}

    @jax.jit
    def layer(w, a):
        return jnp.tanh(a @ w)

    def f(p, x):
        return layer(p["w1"], x) @ p["w2"]

    return f, params, _x(rng, n1, d), _x(rng, n2, d)


def scan_rnn(seed):
    rng = _rng(seed)
    n1, n2, d, h, c = _sizes(rng)
    t = 3
    params = {"w_in": _w(rng, d, h), "w_rec": _w(rng, h, h, scale=0.5), "w_out": _w(rng, h, c)}

    def f(p, x):  # x: (N, T, D)
        def step(state, xt):
            state = jnp.tanh(xt @ p["w_in"] + state @ p["w_rec"])
            return state, None

        state, _ = jax.lax.scan(step, jnp.zeros((x.shape[0], h), F64), jnp.swapaxes(x, 0, 1))
        return state @ p["w_out"]

    return f, params, _x(rng, n1, t, d), _x(rng, n2, t, d)


def closes_over_arrays(seed):
    rng = _rng(seed)
    n1, n2, d, h, c = _sizes(rng)
    frozen = _w(rng, d, h)  # not a parameter: a constant of the model
    params = {"w": _w(rng, h, c), "scale": jnp.asarray(1.3, F64)}

    def f(p, x):
        return p["scale"] * jnp.cos(x @ frozen) @ p["w"]

    return f, params, _x(rng, n1, d), _x(rng, n2, d)


def custom_vjp_activation(seed):
    rng = _rng(seed)
    n1, n2, d, h, c = _sizes(rng)

    @jax.custom_vjp
    def softplus(z):
        return jnp.logaddexp(z, 0.0)

    softplus.defvjp(lambda z: (softplus(z), z), lambda z, g: (g * jax.nn.sigmoid(z),))
    params = {"w1": _w(rng, d, h), "w2": _w(rng, h, c)}

    def f(p, x):
        return softplus(x @ p["w1"]) @ p["w2"]

    return f, params, _x(rng, n1, d), _x(rng, n2, d)


def modular_addition(seed):
    """The mean-field quadratic model of seed 002 §4 on one-hot pairs (a, b) of Z_p."""
    rng = _rng(seed)
    p, width = 5, int(rng.integers(4, 8))
    params = {"w1": _w(rng, width, 2 * p, scale=1.0), "w2": _w(rng, p, width, scale=1.0)}

    def f(q, x):
        return ((x @ q["w1"].T / np.sqrt(2 * p)) ** 2) @ q["w2"].T / width

    a, b = np.meshgrid(np.arange(p), np.arange(p), indexing="ij")
    x = jnp.asarray(np.concatenate([np.eye(p)[a.ravel()], np.eye(p)[b.ravel()]], axis=1), F64)
    return f, params, x[:6], x[10:13]


def tms_model(seed):
    """Toy Models of Superposition: ReLU(W^T W x + b)."""
    rng = _rng(seed)
    n, m = 5, 2
    params = {"W": _w(rng, m, n), "b": _w(rng, n, scale=0.1)}

    def f(q, x):
        return jax.nn.relu(x @ q["W"].T @ q["W"] + q["b"])

    x = jnp.asarray(np.abs(rng.standard_normal((7, n))), F64)
    return f, params, x[:4], x[4:]


ZOO = {
    fn.__name__: fn
    for fn in [
        mlp_bias,
        shared_weights,
        residual,
        conv1d,
        conv2d,
        layer_norm,
        einsum_3index,
        tied_autoencoder,
        low_rank,
        lora,
        deep_linear,
        bilinear,
        multiplicative_gate,
        softmax_output,
        attention,
        attention_qk_product,
        embedding_lookup,
        embedding_one_hot,
        nested_pytree,
        jitted_submodule,
        scan_rnn,
        closes_over_arrays,
        custom_vjp_activation,
        modular_addition,
        tms_model,
    ]
}


# ---- models that mix examples -----------------------------------------------------------


def batch_norm(seed):
    rng = _rng(seed)
    n1, n2, d, h, c = _sizes(rng)
    params = {"w1": _w(rng, d, h), "gamma": 1.0 + _w(rng, h, scale=0.1), "w2": _w(rng, h, c)}

    def f(p, x):
        z = x @ p["w1"]
        z = (z - z.mean(0)) / jnp.sqrt(z.var(0) + 1e-3) * p["gamma"]
        return jnp.tanh(z) @ p["w2"]

    return f, params, _x(rng, n1 + 2, d), _x(rng, n2, d)


def batch_centring(seed):
    rng = _rng(seed)
    n1, n2, d, h, c = _sizes(rng)
    params = {"w1": _w(rng, d, h), "w2": _w(rng, h, c)}

    def f(p, x):
        return jnp.tanh((x - x.mean(0)) @ p["w1"]) @ p["w2"]

    return f, params, _x(rng, n1 + 2, d), _x(rng, n2, d)


COUPLED = {fn.__name__: fn for fn in [batch_norm, batch_centring]}
