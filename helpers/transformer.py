"""A one-layer decoder-style transformer on modular addition (Nanda et al. 2023), in plain JAX.

The task is the one of ``helpers.modular``: all ``p**2`` pairs ``(a, b)`` in row-major order
``index = a * p + b``, the target ``(a + b) mod p``. Here the pair is a sequence of three
tokens ``a b =`` over a vocabulary of ``p + 1`` (token ``p`` is ``=``), and the model is the
one-layer transformer of Nanda, Chan, Lieberum, Smith and Steinhardt (2023), "Progress measures
for grokking via mechanistic interpretability":

* residual stream ``r_t = E[tok_t] + P[t]`` (learned token and position embeddings, ``d_model``);
* one multi-head attention layer (``n_heads`` heads of size ``d_head``; causal, so the ``=``
  position attends to all three positions), added to the residual stream;
* a ReLU MLP with ``d_mlp`` neurons, added to the residual stream;
* an unembedding to ``p`` logits, read at the ``=`` position;
* no LayerNorm and no biases.

Only the ``=`` position's output is used, and in a one-layer model nothing else reaches it: the
attention of that position (query from ``=``, keys and values from all three positions) and
the MLP at that position give its logits exactly. ``apply`` computes only these (the outputs at
the other positions, which a causal mask would shield from ``=`` anyway, are never read).

Attention is written as ``(x W_Q)(x W_K)^T``, never as a product ``W_Q W_K^T`` of two
parameters, so that every parameter enters as one factor of a matrix product with an
activation (the form the eNTK's structured path factorises).

The parameters are a dict (``init_params``), the model a pure function ``apply(params, x)`` of
one-hot inputs ``x: (N, 3, p + 1)`` (so that the embedding is a matrix product, like every other
layer). Training (``train_runs``) is one compiled loop: full-batch AdamW on the cross-entropy,
``vmap``-ed over seeds, ``lax.scan``/``fori_loop`` over epochs, metrics every ``record_every``
epochs. The Fourier analysis of the trained network (the embedding's spectrum over ``Z_p``, the
neurons' spectra over the ``p x p`` torus, key frequencies) and Nanda et al.'s progress measures
(restricted and excluded loss, Fourier sparsity of the embedding) are here as well.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import optax

from . import _checks
from . import models as _models

__all__ = [
    "PARAM_KEYS",
    "COMPONENTS",
    "Runs",
    "tokens",
    "one_hot_inputs",
    "init_params",
    "apply",
    "apply_tokens",
    "neuron_activations",
    "train_runs",
    "embedding_spectrum",
    "torus_frequency_shares",
    "neuron_spectra",
    "key_frequencies",
    "logit_projection",
    "progress_measures",
    "split",
    "fourier_basis",
    "symmetric_family",
    "frequency_content",
    "frequency_rotation",
]

# The parameter pytree, in the order of the forward pass.
PARAM_KEYS = ("embed", "pos", "W_Q", "W_K", "W_V", "W_O", "W_in", "W_out", "unembed")

# The components of the model whose eNTKs the chapter compares: a ``groups`` dict for
# ``helpers.ntk.layerwise_entk`` (each group a list of top-level keys of the params).
COMPONENTS = {
    "embed": ["embed", "pos"],
    "W_Q": ["W_Q"],
    "W_K": ["W_K"],
    "W_V": ["W_V"],
    "W_O": ["W_O"],
    "W_in": ["W_in"],
    "W_out": ["W_out"],
    "unembed": ["unembed"],
}


# ----------------------------------------------------------------------------------------
# argument checks
# ----------------------------------------------------------------------------------------


def _is_traced(x) -> bool:
    return isinstance(x, jax.core.Tracer)


def _check_p(p, name: str = "p") -> int:
    return _checks.integer(p, name, low=2)


def _shapes(params) -> dict:
    return {k: tuple(v.shape) for k, v in params.items()}


def _check_params(params, name: str = "params") -> tuple[int, int, int, int, int]:
    """``params`` as from ``init_params``; returns ``(p, d_model, n_heads, d_head, d_mlp)``.

    Shape checks work on traced values; finiteness is checked on concrete arrays only.
    """
    if not isinstance(params, dict) or set(params) != set(PARAM_KEYS):
        got = f"a dict with keys {sorted(params)}" if isinstance(params, dict) else _checks.describe(params)
        raise TypeError(f"{name} must be a dict with keys {list(PARAM_KEYS)} (from init_params); got {got}")
    for key in PARAM_KEYS:
        w = params[key]
        if not hasattr(w, "shape") or not hasattr(w, "dtype"):
            raise TypeError(f"{name}['{key}'] must be an array; got {_checks.describe(w)}")
        if np.dtype(w.dtype).kind != "f":
            raise TypeError(f"{name}['{key}'] must be a floating-point array; got dtype {w.dtype}")
    s = _shapes(params)
    try:
        vocab, d = s["embed"]
        heads, _, d_head = s["W_Q"]
        d_mlp = s["W_in"][1]
        p = s["unembed"][1]
    except (ValueError, IndexError):
        raise ValueError(f"{name} has arrays of the wrong rank; got shapes {s}") from None
    want = {
        "embed": (p + 1, d),
        "pos": (3, d),
        "W_Q": (heads, d, d_head),
        "W_K": (heads, d, d_head),
        "W_V": (heads, d, d_head),
        "W_O": (heads, d_head, d),
        "W_in": (d, d_mlp),
        "W_out": (d_mlp, d),
        "unembed": (d, p),
    }
    bad = {k: s[k] for k in PARAM_KEYS if s[k] != want[k]}
    if bad:
        raise ValueError(
            f"{name} must hold arrays of consistent shapes (with p = {p}, d_model = {d}, n_heads = {heads}, "
            f"d_head = {d_head}, d_mlp = {d_mlp}: {want}); got {bad} for those keys"
        )
    if min(p, d, heads, d_head, d_mlp) < 1:
        raise ValueError(f"{name} must have non-empty arrays; got shapes {s}")
    if not any(_is_traced(v) for v in params.values()):
        _checks.finite_tree(params, name)
    return p, d, heads, d_head, d_mlp


def _check_inputs(x, p: int, name: str = "x"):
    """``x`` is ``(N, 3, p + 1)`` real with N >= 1; traced arrays are shape-checked only."""
    return _checks.batch(x, name, (3, p + 1), f"(N, 3, p + 1) = (N, 3, {p + 1}) one-hot tokens 'a b ='")


def _check_tokens(tok, p: int, name: str = "tokens"):
    if isinstance(tok, (list, tuple)) or not hasattr(tok, "shape"):
        tok = _checks.array(tok, name, ndim=2, kind="int")
    if len(tok.shape) != 2 or tok.shape[1] != 3 or tok.shape[0] == 0:
        raise ValueError(f"{name} must be (N, 3) token ids 'a b =' with N >= 1; got shape {tuple(tok.shape)}")
    if np.dtype(tok.dtype).kind not in "iu":
        raise TypeError(f"{name} must be an integer array of token ids; got dtype {tok.dtype}")
    if not _is_traced(tok):
        arr = np.asarray(tok)
        if arr.min() < 0 or arr.max() > p:
            raise ValueError(f"{name} must hold token ids in [0, p] = [0, {p}]; got values in [{arr.min()}, {arr.max()}]")
    return tok


def _check_float_dtype(dtype, name: str = "dtype"):
    try:
        kind = np.dtype(dtype).kind
    except TypeError as err:
        raise TypeError(f"{name} must be a floating-point dtype; got {dtype!r}") from err
    if kind != "f":
        raise TypeError(f"{name} must be a floating-point dtype; got {np.dtype(dtype)}")
    return dtype


# ----------------------------------------------------------------------------------------
# data and model
# ----------------------------------------------------------------------------------------


def tokens(p: int) -> np.ndarray:
    """The ``p**2`` sequences ``a b =`` as token ids: ``(p*p, 3)``, row ``a * p + b`` is ``(a, b, p)``."""
    p = _check_p(p)
    idx = np.arange(p * p)
    return np.stack([idx // p, idx % p, np.full(p * p, p)], axis=1)


def one_hot_inputs(p: int, *, dtype=np.float32) -> np.ndarray:
    """The ``p**2`` sequences ``a b =`` one-hot: ``(p*p, 3, p + 1)``, row ``a * p + b``."""
    p = _check_p(p)
    _check_float_dtype(dtype)
    return np.eye(p + 1, dtype=dtype)[tokens(p)]


def init_params(key, p: int, *, d_model: int, n_heads: int, d_head: int, d_mlp: int, dtype=jnp.float32) -> dict:
    """Gaussian initialisation, each matrix scaled by ``1/sqrt(fan-in)``.

    The embeddings are ``N(0, 1/d_model)`` (so a residual vector has norm about 1), the
    attention and MLP input matrices and the unembedding ``N(0, 1/d_model)``, ``W_O``
    ``N(0, 1/(n_heads d_head))`` and ``W_out`` ``N(0, 1/d_mlp)``.

    Returns:
        The parameter dict, with ``embed`` ``(p+1, d)``, ``pos`` ``(3, d)``, ``W_Q``, ``W_K``, ``W_V``
        ``(H, d, d_head)``, ``W_O`` ``(H, d_head, d)``, ``W_in`` ``(d, d_mlp)``, ``W_out``
        ``(d_mlp, d)``, ``unembed`` ``(d, p)``.
    """
    key = _checks.rng_key(key, "key")
    p = _check_p(p)
    d_model = _checks.integer(d_model, "d_model", low=1)
    n_heads = _checks.integer(n_heads, "n_heads", low=1)
    d_head = _checks.integer(d_head, "d_head", low=1)
    d_mlp = _checks.integer(d_mlp, "d_mlp", low=1)
    _check_float_dtype(dtype)
    shapes = {
        "embed": ((p + 1, d_model), d_model),
        "pos": ((3, d_model), d_model),
        "W_Q": ((n_heads, d_model, d_head), d_model),
        "W_K": ((n_heads, d_model, d_head), d_model),
        "W_V": ((n_heads, d_model, d_head), d_model),
        "W_O": ((n_heads, d_head, d_model), n_heads * d_head),
        "W_in": ((d_model, d_mlp), d_model),
        "W_out": ((d_mlp, d_model), d_mlp),
        "unembed": ((d_model, p), d_model),
    }
    keys = jax.random.split(key, len(PARAM_KEYS))
    return {
        name: _models.normal(k, shapes[name][0], dtype) / np.sqrt(shapes[name][1]).astype(dtype)
        for name, k in zip(PARAM_KEYS, keys)
    }


def _forward(params, resid):
    """From the residual stream ``(N, 3, d)`` after the embeddings to the logits ``(N, p)``.

    Returns ``(logits, neuron activations (N, d_mlp))``.
    """
    d_head = params["W_Q"].shape[2]
    query = jnp.einsum("nd,hde->nhe", resid[:, 2], params["W_Q"])            # the '=' position
    keys = jnp.einsum("ntd,hde->nhte", resid, params["W_K"])
    values = jnp.einsum("ntd,hde->nhte", resid, params["W_V"])
    scores = jnp.einsum("nhe,nhte->nht", query, keys) / float(np.sqrt(d_head))
    pattern = jax.nn.softmax(scores, axis=-1)                                  # (N, H, 3)
    mixed = jnp.einsum("nht,nhte->nhe", pattern, values)
    resid_mid = resid[:, 2] + jnp.einsum("nhe,hed->nd", mixed, params["W_O"])
    neurons = jax.nn.relu(resid_mid @ params["W_in"])
    resid_post = resid_mid + neurons @ params["W_out"]
    return resid_post @ params["unembed"], neurons


def apply(params: dict, x) -> jnp.ndarray:
    """The logits at the ``=`` position: ``x (N, 3, p + 1)`` one-hot tokens -> ``(N, p)``.

    ``r_t = x_t E + P_t``; per head ``h``, ``q = r_2 W_Q^h``, ``k_t = r_t W_K^h``,
    ``v_t = r_t W_V^h``, attention ``softmax_t(q . k_t / sqrt(d_head))``; then
    ``m = r_2 + sum_h sum_t attn_t v_t W_O^h``, ``logits = (m + ReLU(m W_in) W_out) U``.
    """
    p, *_ = _check_params(params)
    x = _check_inputs(x, p)
    resid = jnp.einsum("ntv,vd->ntd", x, params["embed"]) + params["pos"]
    return _forward(params, resid)[0]


def apply_tokens(params: dict, tok) -> jnp.ndarray:
    """``apply`` on integer token ids ``(N, 3)`` (embedding by lookup, the training path) -> ``(N, p)``."""
    p, *_ = _check_params(params)
    tok = _check_tokens(tok, p)
    return _forward(params, params["embed"][tok] + params["pos"])[0]


def neuron_activations(params: dict, tok) -> jnp.ndarray:
    """The MLP neurons ``ReLU(m W_in)`` at the ``=`` position: tokens ``(N, 3)`` -> ``(N, d_mlp)``."""
    p, *_ = _check_params(params)
    tok = _check_tokens(tok, p)
    return _forward(params, params["embed"][tok] + params["pos"])[1]


# ----------------------------------------------------------------------------------------
# training
# ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Runs:
    """What ``train_runs`` recorded for S runs trained side by side.

    Attributes:
        p: the modulus; sizes: ``{"d_model", "n_heads", "d_head", "d_mlp"}``.
        seeds: ``(S,)`` the seed of each run (initialisation and train/test split).
        epochs: ``(R,)`` the recorded epochs ``0, record_every, 2 record_every, ...``.
        metrics: ``"train_loss"``, ``"test_loss"``, ``"train_acc"``, ``"test_acc"``, each
            ``(S, R)``; entry ``r`` is measured on the parameters after ``epochs[r]`` updates.
        snapshot_epochs: ``(Q,)`` the epochs at which parameters were kept.
        params: dict of ``(S, Q, ...)`` arrays, the parameters at the snapshot epochs.
        train_idx: ``(S, N_train)`` the training inputs of each run (row ``a * p + b``).
    """

    p: int
    sizes: dict
    seeds: np.ndarray
    epochs: np.ndarray
    metrics: dict
    snapshot_epochs: np.ndarray
    params: dict
    train_idx: np.ndarray

    def snapshot(self, run: int, epoch: int) -> dict:
        """The parameters of run ``run`` (an index into ``seeds``) at a snapshot ``epoch``."""
        run, pos = _checks.snapshot_index(self.snapshot_epochs, len(self.seeds), run, epoch)
        return {k: jnp.asarray(v[run, pos]) for k, v in self.params.items()}


def split(p: int, train_fraction: float, seed: int) -> np.ndarray:
    """Sorted training indices: ``round(train_fraction p**2)`` pairs of ``default_rng(seed).permutation``.

    The same split as ``helpers.modular.make_data(p, train_fraction=..., seed=seed).train_idx``.
    """
    p = _check_p(p)
    train_fraction = _checks.real(train_fraction, "train_fraction", low=0.0, high=1.0, low_open=True, high_open=True)
    seed = _checks.integer(seed, "seed", low=0)
    n_train = int(round(train_fraction * p * p))
    if not 1 <= n_train <= p * p - 1:
        raise ValueError(f"train_fraction must leave at least one pair on each side of the split of {p * p}; got {train_fraction}")
    return np.sort(np.random.default_rng(seed).permutation(p * p)[:n_train])


@functools.lru_cache(maxsize=8)
def _runner(p: int, sizes: tuple, lr: float, weight_decay: float, beta2: float, record_every: int):
    """A compiled function advancing S runs by ``n`` blocks of ``record_every`` epochs.

    Hand-written rather than ``helpers.train``: the runs are ``vmap``-ed over seeds (one XLA
    program trains all of them), and the metrics of every block are written into a buffer
    inside the compiled loop.
    """
    tok = jnp.asarray(tokens(p))
    labels = jnp.asarray((np.arange(p * p) // p + np.arange(p * p) % p) % p)
    optimizer = optax.adamw(lr, b1=0.9, b2=beta2, weight_decay=weight_decay)

    def loss_fn(q, idx):
        logits = _forward(q, q["embed"][tok[idx]] + q["pos"])[0]
        return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels[idx]))

    def epoch(_, carry):
        q, state, idx = carry
        grads = jax.grad(loss_fn)(q, idx)
        updates, state = optimizer.update(grads, state, q)
        return optax.apply_updates(q, updates), state, idx

    def measure(q, mask):
        logits = _forward(q, q["embed"][tok] + q["pos"])[0]
        losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
        correct = (jnp.argmax(logits, axis=1) == labels).astype(logits.dtype)
        test = 1.0 - mask
        return jnp.stack([
            jnp.sum(losses * mask) / jnp.sum(mask),
            jnp.sum(losses * test) / jnp.sum(test),
            jnp.sum(correct * mask) / jnp.sum(mask),
            jnp.sum(correct * test) / jnp.sum(test),
        ]).astype(jnp.float32)

    def one_run(q, state, idx, mask, buffer, start, n):
        def block(i, carry):
            q, state, buffer = carry
            q, state, _ = jax.lax.fori_loop(0, record_every, epoch, (q, state, idx))
            buffer = jax.lax.dynamic_update_slice(buffer, measure(q, mask)[:, None], (0, start + i + 1))
            return q, state, buffer

        return jax.lax.fori_loop(0, n, block, (q, state, buffer))

    advance = jax.jit(jax.vmap(one_run, in_axes=(0, 0, 0, 0, 0, None, None)))
    first = jax.jit(jax.vmap(measure))
    return optimizer, advance, first


def train_runs(
    p: int,
    seeds,
    *,
    d_model: int = 64,
    n_heads: int = 4,
    d_head: int = 16,
    d_mlp: int = 256,
    train_fraction: float = 0.4,
    lr: float = 1e-3,
    weight_decay: float = 1.0,
    beta2: float = 0.98,
    epochs: int = 2000,
    record_every: int = 10,
    snapshot_at=(),
) -> Runs:
    """Train one transformer per seed, side by side, full-batch AdamW on the cross-entropy.

    Run ``s`` initialises with ``init_params(PRNGKey(s), p, ...)`` and trains on the split
    ``split(p, train_fraction, s)``; AdamW with ``b1 = 0.9``, ``b2 = beta2`` and decoupled
    weight decay (Nanda et al. 2023: lr 1e-3, weight decay 1, betas (0.9, 0.98)). All runs
    are one ``vmap``-ed XLA program; metrics every ``record_every`` epochs.

    Args:
        p: the modulus; seeds: non-empty sequence of distinct non-negative integers.
        epochs: a multiple of ``record_every``.
        snapshot_at: epochs (multiples of ``record_every`` in ``[0, epochs]``) at which the
            parameters are kept; 0 and ``epochs`` are always kept.

    Returns:
        ``Runs``.
    """
    p = _checks.integer(p, "p", low=3)
    if isinstance(seeds, (list, tuple)) and len(seeds) == 0:
        raise ValueError("seeds must be a non-empty sequence of distinct non-negative integers; got an empty one")
    seeds = _checks.array(seeds, "seeds", ndim=1, kind="int")
    if np.any(seeds < 0) or np.unique(seeds).size != seeds.size:
        raise ValueError(f"seeds must be distinct non-negative integers; got {seeds.tolist()}")
    sizes = {k: _checks.integer(v, k, low=1) for k, v in
             (("d_model", d_model), ("n_heads", n_heads), ("d_head", d_head), ("d_mlp", d_mlp))}
    train_fraction = _checks.real(train_fraction, "train_fraction", low=0.0, high=1.0, low_open=True, high_open=True)
    n_train = int(round(train_fraction * p * p))
    if not 1 <= n_train <= p * p - 1:
        raise ValueError(f"train_fraction must leave at least one pair on each side of the split of {p * p}; got {train_fraction}")
    lr = _checks.real(lr, "lr", low=0.0, low_open=True)
    weight_decay = _checks.real(weight_decay, "weight_decay", low=0.0)
    beta2 = _checks.real(beta2, "beta2", low=0.0, high=1.0, high_open=True)
    record_every = _checks.integer(record_every, "record_every", low=1)
    epochs = _checks.integer(epochs, "epochs", low=record_every)
    if epochs % record_every:
        raise ValueError(f"epochs must be a multiple of record_every = {record_every}; got {epochs}")
    if isinstance(snapshot_at, (str, dict)) or not hasattr(snapshot_at, "__iter__"):
        raise TypeError(f"snapshot_at must be a sequence of epochs; got {_checks.describe(snapshot_at)}")
    snaps = {0, epochs}
    for e in snapshot_at:
        e = _checks.integer(e, "snapshot_at entries", low=0, high=epochs)
        if e % record_every:
            raise ValueError(f"snapshot_at entries must be multiples of record_every = {record_every}; got {e}")
        snaps.add(e)
    snapshot_epochs = np.array(sorted(snaps))

    optimizer, advance, first = _runner(p, tuple(sizes.values()), lr, weight_decay, beta2, record_every)
    keys = jnp.stack([jax.random.PRNGKey(int(s)) for s in seeds])
    q = jax.vmap(lambda k: init_params(k, p, **sizes))(keys)
    state = jax.vmap(optimizer.init)(q)
    train_idx = np.stack([split(p, train_fraction, int(s)) for s in seeds])
    mask = np.zeros((len(seeds), p * p), np.float32)
    np.put_along_axis(mask, train_idx, 1.0, axis=1)
    idx, mask = jnp.asarray(train_idx), jnp.asarray(mask)
    n_rec = epochs // record_every + 1
    buffer = jnp.zeros((len(seeds), 4, n_rec), jnp.float32)
    buffer = buffer.at[:, :, 0].set(first(q, mask))
    kept = [jax.tree_util.tree_map(np.asarray, q)]
    done = 0
    for e in snapshot_epochs[1:]:
        q, state, buffer = advance(q, state, idx, mask, buffer, done // record_every, int(e - done) // record_every)
        kept.append(jax.tree_util.tree_map(np.asarray, q))
        done = int(e)
    buffer = np.asarray(buffer)
    names = ("train_loss", "test_loss", "train_acc", "test_acc")
    return Runs(
        p=p,
        sizes=sizes,
        seeds=seeds.copy(),
        epochs=np.arange(n_rec) * record_every,
        metrics={n: buffer[:, j] for j, n in enumerate(names)},
        snapshot_epochs=snapshot_epochs,
        params={k: np.stack([s[k] for s in kept], axis=1) for k in PARAM_KEYS},
        train_idx=train_idx,
    )


# ----------------------------------------------------------------------------------------
# Fourier analysis over Z_p and the p x p torus, key frequencies
# ----------------------------------------------------------------------------------------


def fourier_basis(p: int) -> np.ndarray:
    """Orthonormal real Fourier basis of functions on ``Z_p`` (odd ``p``): ``(p, p)``.

    Row 0 is the constant ``1/sqrt(p)``; rows ``2k - 1`` and ``2k`` are ``cos(2 pi k s / p)`` and
    ``sin(2 pi k s / p)`` over ``s = 0 .. p-1``, normalised, for ``k = 1 .. (p-1)/2``.
    """
    p = _checks.integer(p, "p", low=3)
    if p % 2 == 0:
        raise ValueError(f"p must be odd (the cos/sin rows are then an orthonormal basis); got {p}")
    s = np.arange(p)
    rows = [np.full(p, 1 / np.sqrt(p))]
    for k in range(1, p // 2 + 1):
        rows += [np.cos(2 * np.pi * k * s / p) * np.sqrt(2 / p), np.sin(2 * np.pi * k * s / p) * np.sqrt(2 / p)]
    return np.stack(rows)


def _frequency_of_row(p: int) -> np.ndarray:
    """The frequency ``k`` of each row of ``fourier_basis(p)``: ``0, 1, 1, 2, 2, ...``."""
    return np.concatenate([[0], np.repeat(np.arange(1, p // 2 + 1), 2)])


def embedding_spectrum(params: dict) -> np.ndarray:
    """Power of the token embedding at each frequency over ``Z_p`` (Nanda et al. 2023 Fig. 3).

    With ``B = fourier_basis(p)`` and ``E`` the embeddings of the tokens ``0 .. p-1`` (``p x d``),
    the power at frequency ``k`` is the squared norm of the rows of ``B E`` of frequency ``k``:
    ``||cos_k^T E||**2 + ||sin_k^T E||**2`` (``k >= 1``) and ``||const^T E||**2`` (``k = 0``). The
    entries sum to ``||E||_F**2``.

    Returns:
        ``(p // 2 + 1,)``, entry ``k`` the power at frequency ``k``.
    """
    p, *_ = _check_params(params)
    if p % 2 == 0 or p < 3:
        raise ValueError(f"params must be for an odd modulus p >= 3 (the real Fourier basis); got p = {p}")
    coeff = fourier_basis(p) @ np.asarray(params["embed"], np.float64)[:p]
    power = np.sum(coeff**2, axis=1)
    return np.bincount(_frequency_of_row(p), weights=power)


def torus_frequency_shares(tables) -> np.ndarray:
    """Share of the variance of functions on the ``p x p`` torus carried by each frequency.

    A function ``A[a, b]`` has 2-D Fourier coefficients ``B A B^T`` (``B = fourier_basis(p)``).
    Frequency ``k`` carries the coefficients whose ``a`` and ``b`` frequencies both lie in
    ``{0, k}``, except the constant: the span of ``cos``/``sin`` of ``w_k a``, of ``w_k b`` and
    their products (Nanda et al. 2023 §5: a neuron is well approximated by such a function of
    one frequency). Shares are divided by the variance (everything but the constant), so a
    function of that form has share 1 at its frequency; a constant function gets 0 everywhere.

    Args:
        tables: ``(p, p, n)``, ``n`` functions on the torus (``[a, b, j]``), odd ``p >= 3``.

    Returns:
        ``(n, p // 2)``, entry ``[j, k - 1]`` the share of frequency ``k`` in function ``j``.
    """
    tables = _checks.array(tables, "tables", ndim=3).astype(np.float64)
    p = tables.shape[0]
    if tables.shape[1] != p or p < 3 or p % 2 == 0:
        raise ValueError(f"tables must be (p, p, n) with an odd p >= 3; got shape {tables.shape}")
    B = fourier_basis(p)
    coeff = np.einsum("ia,abn,jb->ijn", B, tables, B) ** 2
    freq = _frequency_of_row(p)
    variance = coeff.sum(axis=(0, 1)) - coeff[0, 0]
    out = np.zeros((tables.shape[2], p // 2))
    for k in range(1, p // 2 + 1):
        rows = (freq == 0) | (freq == k)
        out[:, k - 1] = coeff[np.ix_(rows, rows)].sum(axis=(0, 1)) - coeff[0, 0]
    scale = np.maximum(variance, 1e-300)[:, None]
    return np.where(variance[:, None] > 1e-12 * max(float(coeff.sum(axis=(0, 1)).max()), 1e-300), out / scale, 0.0)


def neuron_spectra(params: dict) -> np.ndarray:
    """``torus_frequency_shares`` of the MLP neurons at the ``=`` position over all ``p**2`` inputs.

    Returns:
        ``(d_mlp, p // 2)``, entry ``[j, k - 1]`` the share of frequency ``k`` in neuron ``j``'s
        variance (0 for a dead neuron).
    """
    p, *_ = _check_params(params)
    if p % 2 == 0 or p < 3:
        raise ValueError(f"params must be for an odd modulus p >= 3 (the real Fourier basis); got p = {p}")
    acts = np.asarray(neuron_activations(params, tokens(p)), np.float64).reshape(p, p, -1)
    return torus_frequency_shares(acts)


def key_frequencies(power) -> tuple[np.ndarray, float]:
    """The key frequencies: those above the largest gap of the sorted embedding spectrum.

    The non-constant powers (``k >= 1``) are sorted in decreasing order,
    ``P_(1) >= P_(2) >= ...``; the key frequencies are the ``j`` strongest, where
    ``P_(j) / P_(j+1)`` is the largest ratio of consecutive sorted powers (the cliff of the
    sorted spectrum). No threshold: a Fourier-sparse embedding (Nanda et al. 2023) has a few
    frequencies far above the rest; at initialisation the largest gap is small, which the
    returned ratio shows.

    Args:
        power: ``(m + 1,)`` power per frequency ``0 .. m`` (``embedding_spectrum``), ``m >= 2``.

    Returns:
        ``(sorted key frequencies, the gap ratio P_(j) / P_(j+1))``.
    """
    power = _checks.array(power, "power", ndim=1, min_len=3)
    if np.any(power < 0):
        raise ValueError(f"power must be non-negative (squared norms); got a minimum of {power.min():.3g}")
    rest = power[1:]
    order = np.argsort(-rest, kind="stable")
    srt = rest[order]
    if srt[-1] <= 0:
        raise ValueError("power must be positive at every nonzero frequency (a ratio of powers is taken); got a zero")
    ratios = srt[:-1] / srt[1:]
    j = int(np.argmax(ratios)) + 1
    return np.sort(order[:j] + 1), float(ratios[j - 1])


def _check_perm(perm, p: int):
    if perm is None:
        return None
    perm = _checks.array(perm, "perm", ndim=1, kind="int")
    if perm.shape != (p,) or not np.array_equal(np.sort(perm), np.arange(p)):
        raise ValueError(f"perm must be a permutation of range({p}); got {perm.tolist()[:8]}...")
    return perm


def symmetric_family(p: int, kind: str = "sym", *, perm=None) -> np.ndarray:
    """Symmetric and antisymmetric one-operand Fourier features on the ``p x p`` torus.

    ``kind="sym"``: ``cos(w_k a) + cos(w_k b)`` and ``sin(w_k a) + sin(w_k b)``; ``kind="anti"``:
    the differences; ``w_k = 2 pi k / p``, ``k = 1 .. p // 2``, each vector of unit length, over
    the inputs in row-major order ``a * p + b``. Together the two kinds span the same space as
    the ``a`` and ``b`` families of ``helpers.fourier.fourier_family``. With ``perm`` (a
    permutation of ``range(p)``), the integers are relabelled, ``s -> perm[s]``, in both operands
    at once (the control for a network whose two operands share one embedding).

    Returns:
        ``(p // 2, 2, p**2)`` (``[k - 1, 0]`` the cosine, ``[k - 1, 1]`` the sine), orthonormal for odd ``p``.
    """
    p = _checks.integer(p, "p", low=3)
    if p % 2 == 0:
        raise ValueError(f"p must be odd (the cos/sin pairs are then orthonormal); got {p}")
    kind = _checks.choice(kind, "kind", ("sym", "anti"))
    perm = _check_perm(perm, p)
    a, b = np.divmod(np.arange(p * p), p)
    if perm is not None:
        a, b = perm[a], perm[b]
    sign = 1.0 if kind == "sym" else -1.0
    w = 2 * np.pi * np.arange(1, p // 2 + 1)[:, None] / p
    feats = np.stack([np.cos(w * a) + sign * np.cos(w * b), np.sin(w * a) + sign * np.sin(w * b)], axis=1)
    return feats / np.linalg.norm(feats, axis=-1, keepdims=True)


def _check_basis(basis, p, perm):
    """``p`` an integer >= 3, ``basis`` a float ``(p**2, r)`` array, ``perm`` None or a permutation of Z_p."""
    p = _checks.integer(p, "p", low=3)
    basis = _checks.array(basis, "basis", ndim=2, kind="float")
    if basis.shape[0] != p * p:
        raise ValueError(f"basis must have p**2 = {p * p} rows (one per input); got shape {basis.shape}")
    perm = _check_perm(perm, p)
    return p, basis, perm


def frequency_content(basis, p: int, *, perm=None) -> np.ndarray:
    """Share of each basis vector at each frequency of the ``p x p`` torus.

    Frequency ``k`` is the span of the ``a``, ``b``, ``a + b`` and ``a - b`` Fourier pairs of
    frequency ``k`` (``helpers.fourier.fourier_family``; 8 orthonormal vectors): every function of
    one operand, of the sum or of the difference at that frequency. With ``perm``, the families of
    the torus whose integers are relabelled by ``perm`` in both operands.

    Args:
        basis: ``(p**2, r)``; columns are normalised first.

    Returns:
        ``(r, p // 2)`` shares in ``[0, 1]``.
    """
    p, basis, perm = _check_basis(basis, p, perm)
    relabel = None if perm is None else (perm, perm)
    from . import fourier as _fourier

    fams = [_fourier.fourier_family(p, f, relabel=relabel) for f in ("a", "b", "sum", "diff")]
    return sum(_fourier.family_overlaps(basis, fam) for fam in fams)


def frequency_rotation(basis, p: int, *, perm=None) -> tuple[np.ndarray, np.ndarray, float]:
    """Rotate a subspace by the torus Laplacian and read the frequency of each rotated vector.

    The Laplacian is ``L_a + L_b`` of the ``p x p`` torus (``helpers.fourier.torus_laplacian``;
    relabelled by ``perm`` in both operands if given); the rotation diagonalises it inside the
    subspace (``helpers.fourier.rayleigh_ritz_rotation``, seed 002 App. C). Every Fourier mode of
    frequency ``(k_a, k_b)`` is an eigenvector of ``L_a + L_b`` with eigenvalue
    ``4 - 2 cos(w k_a) - 2 cos(w k_b)``, so a subspace spanned by such modes rotates into them
    (up to mixing of modes with equal eigenvalues). The score is the mean over rotated vectors of
    their largest share at one frequency (``frequency_content``).

    Returns:
        ``(rotated (p**2, r), content (r, p // 2), score)``.
    """
    p, basis, perm = _check_basis(basis, p, perm)
    from . import fourier as _fourier

    relabel = None if perm is None else (perm, perm)
    lap = _fourier.torus_laplacian(p, "a", relabel=relabel, sparse=True) + _fourier.torus_laplacian(p, "b", relabel=relabel, sparse=True)
    rotated, _ = _fourier.rayleigh_ritz_rotation(basis, lap)
    content = frequency_content(rotated, p, perm=perm)
    return rotated, content, float(content.max(axis=1).mean())


# ----------------------------------------------------------------------------------------
# progress measures (Nanda et al. 2023 §5.1)
# ----------------------------------------------------------------------------------------


def _check_frequencies(frequencies, p: int) -> np.ndarray:
    freqs = _checks.array(frequencies, "frequencies", ndim=1, kind="int")
    if freqs.min() < 1 or freqs.max() > p // 2 or np.unique(freqs).size != freqs.size:
        raise ValueError(f"frequencies must be distinct integers in [1, p // 2] = [1, {p // 2}]; got {freqs.tolist()}")
    return freqs


def logit_projection(logits, p: int, frequencies, *, keep: bool) -> np.ndarray:
    """Restrict the logit table to, or remove from it, the key-frequency components.

    ``logits`` is the ``(p**2, p)`` table ``L[(a, b), c]``.

    * ``keep=True`` (restricted logits): the projection of ``L``, as a function of ``(a, b, c)``,
      onto ``cos(w_k (a + b - c))`` and ``sin(w_k (a + b - c))`` for the key ``k``;
    * ``keep=False`` (excluded logits): ``L`` minus, for every class ``c``, its projection as a
      function of ``(a, b)`` onto ``cos(w_k (a + b))`` and ``sin(w_k (a + b))`` for the key ``k``,

    with ``w_k = 2 pi k / p`` (Nanda et al. 2023 §5.1).

    Returns:
        ``(p**2, p)``.
    """
    p = _checks.integer(p, "p", low=3)
    if p % 2 == 0:
        raise ValueError(f"p must be odd (the Fourier families are then orthonormal); got {p}")
    logits = _checks.array(logits, "logits", shape=(p * p, p)).astype(np.float64)
    freqs = _check_frequencies(frequencies, p)
    keep = _checks.boolean(keep, "keep")
    if keep:
        a, b = np.divmod(np.arange(p * p), p)
        s = (a + b)[:, None] - np.arange(p)[None, :]
        out = np.zeros_like(logits)
        for k in freqs:
            for trig in (np.cos, np.sin):
                g = trig(2 * np.pi * k * s / p)
                g /= np.linalg.norm(g)
                out += np.sum(g * logits) * g
        return out
    from . import fourier as _fourier

    basis = _fourier.fourier_family(p, "sum")[freqs - 1].reshape(-1, p * p).T
    return logits - basis @ (basis.T @ logits)


def progress_measures(params: dict, train_idx, frequencies) -> dict:
    """Nanda et al.'s progress measures of one network, for a set of key frequencies.

    Returns a dict of floats:

    * ``"restricted_loss"``: cross-entropy on all ``p**2`` inputs of the restricted logits
      (only the key-frequency components ``cos/sin(w_k (a + b - c))``);
    * ``"excluded_loss"``: cross-entropy on the training inputs ``train_idx`` of the excluded
      logits (the key-frequency components ``cos/sin(w_k (a + b))`` removed);
    * ``"train_loss"``, ``"test_loss"``: the plain cross-entropies, for comparison;
    * ``"key_power"``: share of the embedding's non-constant power at the key frequencies
      (the Fourier sparsity of the embedding).
    """
    p, *_ = _check_params(params)
    logits = np.asarray(apply_tokens(params, tokens(p)), np.float64)
    train_idx = _checks.array(train_idx, "train_idx", ndim=1, kind="int")
    if train_idx.min() < 0 or train_idx.max() >= p * p or np.unique(train_idx).size != train_idx.size:
        raise ValueError(f"train_idx must be distinct input indices in [0, {p * p}); got values in [{train_idx.min()}, {train_idx.max()}]")
    freqs = _check_frequencies(frequencies, p)
    labels = (np.arange(p * p) // p + np.arange(p * p) % p) % p

    def ce(table, rows):
        z = table[rows] - table[rows].max(axis=1, keepdims=True)
        return float(np.mean(np.log(np.exp(z).sum(axis=1)) - z[np.arange(len(rows)), labels[rows]]))

    test_idx = np.setdiff1d(np.arange(p * p), train_idx)
    power = embedding_spectrum(params)
    return {
        "restricted_loss": ce(logit_projection(logits, p, freqs, keep=True), np.arange(p * p)),
        "excluded_loss": ce(logit_projection(logits, p, freqs, keep=False), train_idx),
        "train_loss": ce(logits, train_idx),
        "test_loss": ce(logits, test_idx) if test_idx.size else float("nan"),
        "key_power": float(power[freqs].sum() / power[1:].sum()),
    }
