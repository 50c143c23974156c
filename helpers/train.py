"""A small, jitted optax training loop with a recorded history, shared by the chapters.

``train`` runs ``steps`` full-batch (or caller-batched) optimiser updates of ``loss_fn(params)``
with any optax ``GradientTransformation`` and returns the final parameters together with
parameter snapshots and scalar metrics at the requested steps. The inner loop between two
recorded steps is one compiled ``jax.lax.fori_loop``, so recording is cheap and training is fast.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from . import _checks

from helpers import progress as _progress

__all__ = ["History", "train"]


@dataclass
class History:
    """What ``train`` recorded.

    Attributes:
        steps: ``(R,)`` the step counts at which snapshots were taken (0 = before training).
        params: list of ``R`` parameter pytrees (numpy leaves), one per recorded step.
        metrics: dict name -> ``(R,)`` array, each metric evaluated on the snapshot.
    """

    steps: np.ndarray
    params: list = field(default_factory=list)
    metrics: dict = field(default_factory=dict)


def _record_points(steps: int, record_every: int | None, record_at: Sequence[int] | None) -> np.ndarray:
    steps = _checks.integer(steps, "steps", low=0)
    points = {0, int(steps)}
    if record_every is not None:
        record_every = _checks.integer(record_every, "record_every", low=1)
        points.update(range(0, steps + 1, record_every))
    if record_at is not None:
        record_at = [_checks.integer(s, "record_at entries") for s in record_at]
        bad = [s for s in record_at if not 0 <= int(s) <= steps]
        if bad:
            raise ValueError(f"record_at entries must lie in [0, {steps}]; got {bad}")
        points.update(int(s) for s in record_at)
    return np.array(sorted(points))


def train(
    loss_fn: Callable[[Any], jnp.ndarray],
    params: Any,
    optimizer: optax.GradientTransformation,
    steps: int,
    *,
    record_every: int | None = None,
    record_at: Sequence[int] | None = None,
    metrics: dict[str, Callable[[Any], Any]] | None = None,
    keep_params: bool = True,
    progress: bool | None = None,
) -> tuple[Any, History]:
    """Minimise ``loss_fn(params)`` with ``optimizer`` for ``steps`` steps.

    Args:
        loss_fn: scalar loss of the parameters (the batch is closed over: full-batch training).
        params: initial parameter pytree.
        optimizer: an optax ``GradientTransformation`` (e.g. ``optax.adamw(0.05, 0.01)``).
        steps: number of updates.
        record_every: snapshot every this many steps (0 and ``steps`` are always snapshots).
        record_at: further steps at which to snapshot.
        metrics: dict name -> function of params returning a scalar, evaluated at snapshots
            (``"loss"`` is always recorded).
        keep_params: store the parameter snapshots in the history.
        progress: show a progress bar over the steps (``helpers.progress``: the notebook widget
            in JupyterLab, a text bar under ``make chapter``). ``None`` (default) follows the
            environment variable ``HELPERS_PROGRESS``; it stays off in executed notebooks, whose
            outputs nbval compares. The bar does not change the result: the same updates run,
            in chunks of about 1% of ``steps`` so that it moves.

    Returns:
        ``(final_params, History)``.
    """
    if not callable(loss_fn):
        raise TypeError(f"loss_fn must be callable as loss_fn(params) -> scalar; got {type(loss_fn).__name__}")
    if not isinstance(optimizer, optax.GradientTransformation):
        raise TypeError(f"optimizer must be an optax.GradientTransformation; got {type(optimizer).__name__}")
    _checks.params_tree(params, "params")
    if metrics is not None:
        if not isinstance(metrics, dict) or not all(callable(v) for v in metrics.values()):
            raise TypeError(f"metrics must be a dict name -> function of params; got {_checks.describe(metrics)}")
    _checks.boolean(keep_params, "keep_params")
    points = _record_points(steps, record_every, record_at)
    progress = _progress.enabled(progress)
    metric_fns = {"loss": loss_fn, **(metrics or {})}
    evaluate = jax.jit(lambda p: {k: fn(p) for k, fn in metric_fns.items()})
    opt_state = optimizer.init(params)

    def one_step(_, carry):
        p, s = carry
        grads = jax.grad(loss_fn)(p)
        updates, s = optimizer.update(grads, s, p)
        return optax.apply_updates(p, updates), s

    # The number of steps between snapshots is a traced value, so the loop compiles once
    # (a while loop) however irregular the snapshot schedule is.
    run = jax.jit(lambda p, s, n: jax.lax.fori_loop(0, n, one_step, (p, s)))

    history = History(steps=points, metrics={k: [] for k in metric_fns})
    done = 0
    # with a bar, run between snapshots in chunks of ~1% of the steps, waiting for each
    chunk = max(1, int(steps) // 100) if progress else None
    pbar = _progress.bar(int(steps), "train", "step", leave=False, progress=progress)
    for point in points:
        while point > done:
            n = int(point - done) if chunk is None else min(int(point - done), chunk)
            params, opt_state = run(params, opt_state, n)
            done += n
            if progress:
                jax.block_until_ready(params)
                pbar.update(n)
        values = evaluate(params)
        for k, v in values.items():
            history.metrics[k].append(float(v))
        if not np.isfinite(history.metrics["loss"][-1]):
            pbar.close()
            raise ValueError(
                f"loss_fn is {history.metrics['loss'][-1]} at step {int(point)}: training diverged "
                "(lower the optimizer's learning rate) or the loss is undefined at these parameters"
            )
        if keep_params:
            history.params.append(jax.tree_util.tree_map(np.asarray, params))
        pbar.set_postfix(loss=f"{history.metrics['loss'][-1]:.4g}")
    pbar.close()
    history.metrics = {k: np.asarray(v) for k, v in history.metrics.items()}
    return params, history
