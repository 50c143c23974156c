"""Modular addition: data, the quadratic 1-hidden-layer MLP, and training (seed 002 §4).

Settings follow ``shared/REFERENCE_FACTS.md`` (the paper's experiments):

* inputs: all ``p**2`` pairs ``(a, b)``, encoded as ``concat(one_hot(a), one_hot(b))`` (length
  ``2p``), in row-major order ``index = a * p + b``; target ``one_hot((a + b) mod p)``;
* model (mean-field, no biases): ``f(x) = (1/n) W2 ((W1 x) / sqrt(2p))**2`` with
  ``W1: (n, 2p)``, ``W2: (p, n)``, all weights N(0, 1) (seed 002 eq. 6 up to these scale factors);
* loss: mean squared error against the one-hot target, averaged over all entries;
* optimiser: AdamW (lr 0.05, weight decay 0.01), full batch.

Two trainers: ``train_model`` (one run through the shared ``helpers.train`` loop, any
recording schedule) and ``train_runs`` (several seeds through one compiled loop that records
train/test accuracy and loss at *every* epoch, for locating grokking to the epoch).
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
from . import train as _train

__all__ = [
    "ModularData",
    "Runs",
    "make_data",
    "init_params",
    "apply",
    "mse_loss",
    "accuracy",
    "train_model",
    "train_runs",
    "grokking_epoch",
    "closed_form_kernels",
    "expected_kernels_at_init",
]


@dataclass(frozen=True)
class ModularData:
    """All ``p**2`` inputs and a train/test split.

    Attributes:
        p: the modulus.
        x: ``(p*p, 2p)`` one-hot pairs, row ``a * p + b``.
        y: ``(p*p, p)`` one-hot sums.
        a, b: ``(p*p,)`` integer operands.
        train_idx, test_idx: disjoint index arrays covering ``range(p*p)``.
    """

    p: int
    x: np.ndarray
    y: np.ndarray
    a: np.ndarray
    b: np.ndarray
    train_idx: np.ndarray
    test_idx: np.ndarray


# ----------------------------------------------------------------------------------------
# argument checks shared by the public functions
# ----------------------------------------------------------------------------------------


def _is_traced(x) -> bool:
    return isinstance(x, jax.core.Tracer)


def _check_params(params, name: str = "params") -> tuple:
    """``params`` is ``{"W1": (n, 2p), "W2": (p, n)}`` of floats; returns ``(W1, W2)`` unconverted.

    Works on traced values too (shape checks only; finiteness is checked on concrete arrays).
    """
    if not isinstance(params, dict) or set(params) != {"W1", "W2"}:
        got = f"a dict with keys {sorted(params)}" if isinstance(params, dict) else _checks.describe(params)
        raise TypeError(f"{name} must be a dict with keys 'W1' and 'W2' (from init_params); got {got}")
    w1, w2 = params["W1"], params["W2"]
    for key, w in (("W1", w1), ("W2", w2)):
        if not hasattr(w, "shape") or not hasattr(w, "dtype"):
            raise TypeError(f"{name}['{key}'] must be an array; got {_checks.describe(w)}")
        if np.dtype(w.dtype).kind != "f":
            raise TypeError(f"{name}['{key}'] must be a floating-point array; got dtype {w.dtype}")
    if len(w1.shape) != 2 or len(w2.shape) != 2 or w2.shape[1] != w1.shape[0] or w1.shape[1] != 2 * w2.shape[0]:
        raise ValueError(
            f"{name} must hold W1 (n, 2p) and W2 (p, n) with the same n and p; got W1 {tuple(w1.shape)}, "
            f"W2 {tuple(w2.shape)}"
        )
    if 0 in w1.shape or 0 in w2.shape:
        raise ValueError(f"{name} must have n >= 1 hidden units and p >= 1 classes; got W1 {tuple(w1.shape)}")
    if not _is_traced(w1) and not _is_traced(w2):
        _checks.finite_tree(params, name)
    return w1, w2


def _check_inputs(x, name: str, features: int):
    """``x`` is ``(N, features)`` with N >= 1; lists are converted; traced arrays are shape-checked."""
    return _checks.batch(x, name, (features,), f"(N, {features}) = (N, 2p)")


def _check_modulus(p, name: str = "p") -> int:
    return _checks.integer(p, name, low=2)


def _check_width(width) -> int:
    return _checks.integer(width, "width", low=1)


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


def make_data(p: int, *, train_fraction: float = 0.7, seed: int = 0, dtype=np.float32) -> ModularData:
    """All pairs ``(a, b)`` mod ``p`` with a random train/test split of ``round(train_fraction * p**2)``.

    Args:
        p: the modulus, ``>= 2``.
        train_fraction: in ``(0, 1)``, leaving at least one pair on each side of the split.
        seed: seeds the split (``numpy.random.default_rng``).
        dtype: floating dtype of ``x`` and ``y``.
    """
    p = _check_modulus(p)
    train_fraction = _checks.real(train_fraction, "train_fraction", low=0.0, high=1.0, low_open=True, high_open=True)
    seed = _checks.integer(seed, "seed", low=0)
    _check_float_dtype(dtype)
    n_train = int(round(train_fraction * p * p))
    if not 1 <= n_train <= p * p - 1:
        raise ValueError(
            f"train_fraction must leave at least one pair in the train and in the test split of the "
            f"{p * p} pairs; got {train_fraction} ({n_train} train pairs)"
        )
    a, b = np.meshgrid(np.arange(p), np.arange(p), indexing="ij")
    a, b = a.ravel(), b.ravel()
    eye = np.eye(p, dtype=dtype)
    x = np.concatenate([eye[a], eye[b]], axis=1)
    y = eye[(a + b) % p]
    perm = np.random.default_rng(seed).permutation(p * p)
    return ModularData(p, x, y, a, b, np.sort(perm[:n_train]), np.sort(perm[n_train:]))


def init_params(key: jax.Array, p: int, width: int, *, dtype=jnp.float32) -> dict:
    """``{"W1": (width, 2p), "W2": (p, width)}``, every entry N(0, 1)."""
    key = _checks.rng_key(key, "key")
    p = _check_modulus(p)
    width = _check_width(width)
    _check_float_dtype(dtype)
    k1, k2 = jax.random.split(key)
    return {
        "W1": _models.normal(k1, (width, 2 * p), dtype),
        "W2": _models.normal(k2, (p, width), dtype),
    }


def apply(params: dict, x: jnp.ndarray) -> jnp.ndarray:
    """``f(x) = (1/n) W2 ((W1 x)/sqrt(2p))**2``: ``x (N, 2p) -> (N, p)`` (seed 002 eq. 6)."""
    w1, w2 = _check_params(params)
    x = _check_inputs(x, "x", w1.shape[1])
    hidden = (x @ w1.T) / jnp.sqrt(w1.shape[1])
    return (hidden**2) @ w2.T / w1.shape[0]


def _check_targets(y, x, p: int):
    if isinstance(y, (list, tuple)) or not hasattr(y, "shape"):
        y = _checks.array(y, "y", ndim=2)
    if len(y.shape) != 2 or y.shape != (x.shape[0], p):
        raise ValueError(f"y must be (N, p) = ({x.shape[0]}, {p}), one target row per input of x; got shape {tuple(y.shape)}")
    if not _is_traced(y):
        arr = np.asarray(y)
        if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
            raise ValueError(f"y must be finite; got NaN or inf in shape {arr.shape}")
    return y


def mse_loss(params: dict, x: jnp.ndarray, y: jnp.ndarray) -> jnp.ndarray:
    """Mean over all entries of ``(f(x) - y)**2``; ``x (N, 2p)``, ``y (N, p)``."""
    w1, w2 = _check_params(params)
    x = _check_inputs(x, "x", w1.shape[1])
    y = _check_targets(y, x, w2.shape[0])
    return jnp.mean((apply(params, x) - y) ** 2)


def accuracy(params: dict, x: jnp.ndarray, y: jnp.ndarray) -> jnp.ndarray:
    """Fraction of inputs whose arg-max output is the correct sum; ``x (N, 2p)``, ``y (N, p)`` one-hot."""
    w1, w2 = _check_params(params)
    x = _check_inputs(x, "x", w1.shape[1])
    y = _check_targets(y, x, w2.shape[0])
    return jnp.mean(jnp.argmax(apply(params, x), axis=1) == jnp.argmax(y, axis=1))


# ----------------------------------------------------------------------------------------
# training
# ----------------------------------------------------------------------------------------


def train_model(
    data: ModularData,
    *,
    width: int = 512,
    epochs: int = 500,
    lr: float = 0.05,
    weight_decay: float = 0.01,
    seed: int = 0,
    record_every: int | None = 1,
    record_at=None,
    keep_params: bool = True,
):
    """Full-batch AdamW on the training split; returns ``(params, History)``.

    The history records train/test loss and accuracy at every ``record_every`` epochs (one
    epoch = one full-batch step) and at the epochs listed in ``record_at`` (a sequence of
    ints, optional), and, if ``keep_params``, the parameters there.
    """
    if not isinstance(data, ModularData):
        raise TypeError(f"data must be a ModularData (from make_data); got {_checks.describe(data)}")
    width = _check_width(width)
    epochs = _checks.integer(epochs, "epochs", low=0)
    lr = _checks.real(lr, "lr", low=0.0, low_open=True)
    weight_decay = _checks.real(weight_decay, "weight_decay", low=0.0)
    seed = _checks.integer(seed, "seed", low=0)
    if record_every is not None:
        record_every = _checks.integer(record_every, "record_every", low=1)
    if record_at is not None:
        record_at = [_checks.integer(s, "record_at entries", low=0, high=epochs) for s in record_at]
    keep_params = _checks.boolean(keep_params, "keep_params")
    xtr, ytr = jnp.asarray(data.x[data.train_idx]), jnp.asarray(data.y[data.train_idx])
    xte, yte = jnp.asarray(data.x[data.test_idx]), jnp.asarray(data.y[data.test_idx])
    params = init_params(jax.random.PRNGKey(seed), data.p, width)
    # Integer labels computed here, not inside the jitted metrics: an arg-max over a constant
    # one-hot matrix would be constant-folded by XLA at every compilation (slow, and it logs).
    labels_tr = jnp.asarray(np.argmax(data.y[data.train_idx], axis=1))
    labels_te = jnp.asarray(np.argmax(data.y[data.test_idx], axis=1))
    metrics = {
        "train_acc": lambda q: jnp.mean(jnp.argmax(apply(q, xtr), axis=1) == labels_tr),
        "test_acc": lambda q: jnp.mean(jnp.argmax(apply(q, xte), axis=1) == labels_te),
        "test_loss": lambda q: mse_loss(q, xte, yte),
    }
    return _train.train(
        lambda q: mse_loss(q, xtr, ytr),
        params,
        optax.adamw(lr, weight_decay=weight_decay),
        epochs,
        record_every=record_every,
        record_at=record_at,
        metrics=metrics,
        keep_params=keep_params,
    )


@dataclass(frozen=True)
class Runs:
    """What ``train_runs`` recorded for S runs.

    Attributes:
        p, width: the modulus and the hidden width.
        seeds: ``(S,)`` the seed of each run (initialisation and train/test split).
        shuffled: whether the targets were a random relabelling of the sums (the control).
        epochs: ``(E+1,)`` ``0, 1, ..., E``.
        metrics: ``"train_acc"``, ``"test_acc"``, ``"loss"`` (train MSE), ``"test_loss"``, each
            ``(S, E+1)``; entry ``t`` is measured on the parameters after ``t`` updates.
        snapshot_epochs: ``(R,)`` the epochs at which parameters were kept.
        params: ``{"W1": (S, R, n, 2p), "W2": (S, R, p, n)}``.
        train_idx: ``(S, N_train)`` the training inputs of each run (row ``a * p + b``).
        labels: ``(S, p*p)`` the target class of every input in each run.
    """

    p: int
    width: int
    seeds: np.ndarray
    shuffled: bool
    epochs: np.ndarray
    metrics: dict
    snapshot_epochs: np.ndarray
    params: dict
    train_idx: np.ndarray
    labels: np.ndarray

    def snapshot(self, run: int, epoch: int) -> dict:
        """The parameters of run ``run`` (an index into ``seeds``) at a recorded ``epoch``."""
        run, pos = _checks.snapshot_index(self.snapshot_epochs, len(self.seeds), run, epoch)
        return {k: v[run, pos] for k, v in self.params.items()}


@functools.lru_cache(maxsize=8)
def _segment_runner(p: int, width: int, lr: float, weight_decay: float):
    """One compiled function that advances a run by ``n`` epochs, writing metrics into a buffer.

    The forward pass uses that ``x`` is one-hot: ``W1 x = W1[:, a] + W1[:, p + b]`` exactly (a
    sum of two weights; the zeros of the one-hot vector add nothing), which saves the
    ``(p**2, 2p) @ (2p, n)`` product of ``apply``. The loss is the MSE over the training
    inputs, written as a masked mean over all ``p**2`` inputs so that the same forward pass
    gives the test metrics: hand-written because ``helpers.train`` evaluates metrics only at
    snapshots, and grokking must be located to the epoch.
    """
    a = jnp.asarray(np.arange(p * p) // p)
    b = jnp.asarray(np.arange(p * p) % p)
    optimizer = optax.adamw(lr, weight_decay=weight_decay)

    def forward(q):
        hidden = (q["W1"][:, a] + q["W1"][:, p + b]).T / jnp.sqrt(2.0 * p)
        return (hidden**2) @ q["W2"].T / width

    def loss(q, mask, targets):
        out = forward(q)
        per_input = jnp.mean((out - targets) ** 2, axis=1)
        return jnp.sum(per_input * mask) / jnp.sum(mask), (out, per_input)

    def body(t, carry):
        q, state, buffer, start, mask, targets, labels = carry
        (value, (out, per_input)), grads = jax.value_and_grad(loss, has_aux=True)(q, mask, targets)
        correct = (jnp.argmax(out, axis=1) == labels).astype(out.dtype)
        test = 1.0 - mask
        row = jnp.stack([
            jnp.sum(correct * mask) / jnp.sum(mask),
            jnp.sum(correct * test) / jnp.sum(test),
            value,
            jnp.sum(per_input * test) / jnp.sum(test),
        ])
        buffer = jax.lax.dynamic_update_slice(buffer, row[:, None], (0, start + t))
        updates, state = optimizer.update(grads, state, q)
        return optax.apply_updates(q, updates), state, buffer, start, mask, targets, labels

    @jax.jit
    def advance(q, state, buffer, start, n, mask, targets, labels):
        out = jax.lax.fori_loop(0, n, body, (q, state, buffer, start, mask, targets, labels))
        return out[:3]

    return optimizer, advance


def train_runs(
    p: int,
    seeds,
    *,
    width: int = 512,
    epochs: int = 500,
    lr: float = 0.05,
    weight_decay: float = 0.01,
    train_fraction: float = 0.7,
    snapshot_every: int = 10,
    shuffle_labels: bool = False,
) -> Runs:
    """Train one network per seed, full-batch AdamW, recording metrics at every epoch.

    Run ``s`` initialises with ``init_params(PRNGKey(s), p, width)`` and trains on the split of
    ``make_data(p, train_fraction=..., seed=s)``; all runs share one compiled loop. With
    ``shuffle_labels`` the target of every input is replaced by a random relabelling of the
    sums (``default_rng(s + 1)`` permutes the ``p**2`` targets): a network that can only
    memorise, the control for anything claimed to come with learning the group.

    Args:
        p: the modulus; seeds: non-empty sequence of distinct non-negative integers.
        snapshot_every: parameters are kept at multiples of this and at ``epochs``.

    Returns:
        ``Runs`` (metrics ``(S, epochs + 1)``, parameters ``(S, R, ...)``).
    """
    p = _check_modulus(p)
    if isinstance(seeds, (list, tuple)) and len(seeds) == 0:
        raise ValueError("seeds must be a non-empty sequence of distinct non-negative integers; got an empty one")
    seeds = _checks.array(seeds, "seeds", ndim=1, kind="int")
    if np.any(seeds < 0) or np.unique(seeds).size != seeds.size:
        raise ValueError(f"seeds must be distinct non-negative integers; got {seeds.tolist()}")
    width = _check_width(width)
    epochs = _checks.integer(epochs, "epochs", low=1)
    lr = _checks.real(lr, "lr", low=0.0, low_open=True)
    weight_decay = _checks.real(weight_decay, "weight_decay", low=0.0)
    snapshot_every = _checks.integer(snapshot_every, "snapshot_every", low=1, high=epochs)
    shuffle_labels = _checks.boolean(shuffle_labels, "shuffle_labels")
    optimizer, advance = _segment_runner(p, width, lr, weight_decay)
    snapshot_epochs = np.array(sorted(set(range(0, epochs + 1, snapshot_every)) | {epochs}))
    true_labels = (np.arange(p * p) // p + np.arange(p * p) % p) % p
    eye = np.eye(p, dtype=np.float32)
    metrics = np.zeros((len(seeds), 4, epochs + 1), np.float32)
    kept = {"W1": [], "W2": []}
    train_idx, labels_all = [], []
    for i, seed in enumerate(seeds.tolist()):
        data = make_data(p, train_fraction=train_fraction, seed=seed)
        labels = np.random.default_rng(seed + 1).permutation(true_labels) if shuffle_labels else true_labels
        mask = np.zeros(p * p, np.float32)
        mask[data.train_idx] = 1.0
        args = (jnp.asarray(mask), jnp.asarray(eye[labels]), jnp.asarray(labels))
        q = init_params(jax.random.PRNGKey(seed), p, width)
        state = optimizer.init(q)
        buffer = jnp.zeros((4, epochs + 1), jnp.float32)
        done, snaps = 0, []
        for e in snapshot_epochs:
            if e > done:
                q, state, buffer = advance(q, state, buffer, done, int(e - done), *args)
                done = int(e)
            snaps.append(jax.tree_util.tree_map(np.asarray, q))
        # the metrics of the final parameters: one more pass whose update is discarded
        _, _, buffer = advance(q, state, buffer, epochs, 1, *args)
        metrics[i] = np.asarray(buffer)
        for k in kept:
            kept[k].append(np.stack([s[k] for s in snaps]))
        train_idx.append(data.train_idx)
        labels_all.append(labels)
    names = ("train_acc", "test_acc", "loss", "test_loss")
    return Runs(
        p=p,
        width=width,
        seeds=seeds.copy(),
        shuffled=shuffle_labels,
        epochs=np.arange(epochs + 1),
        metrics={n: metrics[:, j] for j, n in enumerate(names)},
        snapshot_epochs=snapshot_epochs,
        params={k: np.stack(v) for k, v in kept.items()},
        train_idx=np.stack(train_idx),
        labels=np.stack(labels_all),
    )


def grokking_epoch(steps: np.ndarray, test_acc: np.ndarray, *, threshold: float = 0.9) -> int | None:
    """First recorded step at which test accuracy reaches ``threshold`` (``None`` if never).

    Args:
        steps: ``(R,)`` increasing recorded steps (epochs).
        test_acc: ``(R,)`` accuracies in ``[0, 1]`` at those steps.
        threshold: in ``(0, 1]``.
    """
    steps = _checks.array(steps, "steps", ndim=1)
    test_acc = _checks.array(test_acc, "test_acc", ndim=1)
    if steps.shape != test_acc.shape:
        raise ValueError(f"steps and test_acc must have the same shape; got {steps.shape} and {test_acc.shape}")
    if np.any(np.diff(steps) <= 0):
        raise ValueError(f"steps must be strictly increasing; got {steps.tolist()[:8]}...")
    if np.any(test_acc < 0) or np.any(test_acc > 1):
        raise ValueError(f"test_acc must lie in [0, 1] (accuracies); got values in [{test_acc.min()}, {test_acc.max()}]")
    threshold = _checks.real(threshold, "threshold", low=0.0, high=1.0, low_open=True)
    hit = np.flatnonzero(test_acc >= threshold)
    return int(steps[hit[0]]) if hit.size else None


# ----------------------------------------------------------------------------------------
# closed-form kernels (seed 002 App. B, eqs. 15-18, with this module's scale factors)
# ----------------------------------------------------------------------------------------


def closed_form_kernels(params: dict, x1, x2=None, *, collapse: str | None = "class_mean") -> dict:
    """The layerwise eNTK of ``apply`` in closed form (seed 002 App. B, eqs. 16 and 18).

    With ``h(x) = W1 x / sqrt(2p)`` (``n`` hidden units) and ``f_i(x) = (1/n) sum_k W2_ik h_k(x)**2``,

        d f_i / d W1_km = (2 / n) W2_ik h_k(x) x_m / sqrt(2p)                 (eq. 15)
        K1_ij(x, x') = 2 / (p n**2) sum_k W2_ik W2_jk h_k(x) h_k(x') (x . x')   (eq. 16)
        d f_i / d W2_i'k = delta_ii' h_k(x)**2 / n                           (eq. 17)
        K2_ij(x, x') = delta_ij / n**2 sum_k h_k(x)**2 h_k(x')**2             (eq. 18)

    The paper's eqs. (16)/(18) are these with ``n = 1`` and no ``1/sqrt(2p)``; the factors
    here are those of the mean-field parametrisation of ``apply``.

    Args:
        params: ``{"W1": (n, 2p), "W2": (p, n)}``.
        x1: ``(N1, 2p)``; x2: ``(N2, 2p)`` or ``None`` for ``x1``.
        collapse: ``"class_mean"`` (mean over classes of ``K_ii``, ``(N1, N2)``) or ``None``
            (full ``(N1, N2, C, C)``).

    Returns:
        ``{"W1": K1, "W2": K2}``, keyed like ``helpers.ntk.layerwise_entk``; their sum is the eNTK.
    """
    w1, w2 = _check_params(params)
    w1, w2 = jnp.asarray(w1), jnp.asarray(w2)
    if collapse not in (None, "class_mean"):
        raise ValueError(f"collapse must be None or 'class_mean'; got {collapse!r}")
    x1 = jnp.asarray(_check_inputs(x1, "x1", w1.shape[1]), dtype=w1.dtype)
    x2 = x1 if x2 is None else jnp.asarray(_check_inputs(x2, "x2", w1.shape[1]), dtype=w1.dtype)
    n, d = w1.shape
    c = w2.shape[0]
    h1 = x1 @ w1.T / jnp.sqrt(d)
    h2 = x2 @ w1.T / jnp.sqrt(d)
    overlap = x1 @ x2.T
    layer2 = (h1**2) @ (h2**2).T / n**2
    scale = 4.0 / (d * n**2)  # = 2 / (p n**2)
    if collapse == "class_mean":
        readout = jnp.sum(w2**2, axis=0) / c  # (n,): (1/C) sum_i W2_ik**2
        layer1 = scale * ((h1 * readout) @ h2.T) * overlap
        return {"W1": np.asarray(layer1), "W2": np.asarray(layer2)}
    layer1 = scale * jnp.einsum("ik,jk,ak,bk->abij", w2, w2, h1, h2) * overlap[:, :, None, None]
    eye = jnp.eye(c, dtype=w1.dtype)
    return {"W1": np.asarray(layer1), "W2": np.asarray(layer2[:, :, None, None] * eye)}


def expected_kernels_at_init(p: int, width: int) -> dict:
    """The class-mean layer kernels averaged over the N(0, 1) initialisation, on all p**2 inputs.

    With ``delta_a = [a == a']`` and ``delta_b = [b == b']`` (and ``h_k(a, b) = (u_k[a] + v_k[b]) / sqrt(2p)``,
    ``u, v`` independent N(0, 1)), ``E[h h'] = (delta_a + delta_b) / (2p)``, ``x . x' = delta_a + delta_b``,
    ``E[(1/C) sum_i W2_ik**2] = 1`` and Isserlis' theorem give

        E K1(x, x') = (delta_a + delta_b)**2 / (n p**2)
        E K2(x, x') = (1 + (delta_a + delta_b) / 2 + delta_a delta_b) / (n p**2).

    At large width the kernels concentrate on these (fluctuations ~ 1/sqrt(n) relative).

    Returns:
        ``{"W1": (p**2, p**2), "W2": (p**2, p**2)}`` in the row-major input order of ``make_data``.
    """
    p = _check_modulus(p)
    width = _check_width(width)
    a, b = np.meshgrid(np.arange(p), np.arange(p), indexing="ij")
    a, b = a.ravel(), b.ravel()
    da = (a[:, None] == a[None, :]).astype(np.float64)
    db = (b[:, None] == b[None, :]).astype(np.float64)
    norm = width * p**2
    return {"W1": (da + db) ** 2 / norm, "W2": (1.0 + (da + db) / 2 + da * db) / norm}
