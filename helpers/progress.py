"""Progress bars for long loops: in sight when a person runs a chapter, silent when nbval compares.

A chapter's stored outputs are compared cell by cell by nbval, so a progress bar must never reach
them; yet a reader running a chapter in JupyterLab or with ``make chapter`` wants to see a
two-minute training loop move. The switch is the environment variable ``HELPERS_PROGRESS``:

=================  ===============================================================================
``0`` / unset      off (the Makefile exports ``HELPERS_PROGRESS=0`` for ``make test``,
                   ``make notebooks`` and ``make variants``)
``1`` / ``auto``   ``tqdm.auto``: the notebook widget inside a Jupyter kernel with ipywidgets,
                   a text bar on stderr elsewhere (``make lab`` sets this)
``text``           a text bar on stderr (``make chapter`` sets this: papermill streams it to the
                   terminal)
=================  ===============================================================================

When the variable is unset, bars are on (``auto``) only in a kernel started by a Jupyter server
(JupyterLab, Notebook: they set ``JPY_SESSION_NAME``), never under nbval, nbconvert or papermill.

``track(iterable, desc)`` wraps a loop (a kernel sweep over checkpoints); ``bar(total, desc)``
is a bar updated by hand (``helpers.train.train`` uses it for its optimisation steps). Both
cost nothing when progress is off: ``track`` returns the iterable itself.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Iterable

from helpers import _checks

__all__ = ["mode", "enabled", "bar", "track"]

_ENV = "HELPERS_PROGRESS"
_VALUES = {
    "": "off", "0": "off", "off": "off", "false": "off", "no": "off",
    "1": "auto", "on": "auto", "auto": "auto", "true": "auto", "yes": "auto",
    "text": "text",
}


def mode(value: str | None = None) -> str:
    """The progress mode, ``"off"``, ``"auto"`` or ``"text"``.

    Args:
        value: a setting as ``HELPERS_PROGRESS`` takes it (``"0"``, ``"1"``, ``"auto"``,
            ``"text"``, ...); ``None`` (default) reads the environment variable.

    Returns:
        ``"off"``, ``"auto"`` (tqdm.auto: the notebook widget in a Jupyter kernel) or ``"text"``.
    """
    name = "value"
    if value is None:
        value, name = os.environ.get(_ENV), f"the environment variable {_ENV}"
        if value is None:
            return "auto" if os.environ.get("JPY_SESSION_NAME") else "off"
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string such as '0', '1' or 'text'; got {_checks.describe(value)}")
    key = value.strip().lower()
    if key not in _VALUES:
        raise ValueError(f"{name} must be one of {sorted(set(_VALUES) - {''})}; got {value!r}")
    return _VALUES[key]


def enabled(progress: bool | None = None) -> bool:
    """Whether to show progress: ``progress`` if it is a bool, else whether ``mode()`` is not off."""
    if progress is None:
        return mode() != "off"
    return _checks.boolean(progress, "progress")


class _Silent:
    """The bar of a loop whose progress is not shown: every method does nothing."""

    n = 0

    def update(self, n: int = 1) -> None:
        self.n += n

    def set_postfix(self, *args: Any, **kwargs: Any) -> None:
        pass

    def set_description(self, *args: Any, **kwargs: Any) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> "_Silent":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _tqdm(total, desc, unit, leave):
    how = mode()
    if how == "text":
        from tqdm.std import tqdm

        return tqdm(total=total, desc=desc, unit=unit, leave=leave, file=sys.stderr, ncols=88, mininterval=0.5)
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, leave=leave, mininterval=0.5)


def _check_common(desc, unit, leave, progress):
    if desc is not None and not isinstance(desc, str):
        raise TypeError(f"desc must be a string or None; got {_checks.describe(desc)}")
    if not isinstance(unit, str) or not unit:
        raise TypeError(f"unit must be a non-empty string such as 'step'; got {_checks.describe(unit)}")
    _checks.boolean(leave, "leave")
    if progress is not None:
        _checks.boolean(progress, "progress")


def bar(total: int | None = None, desc: str | None = None, unit: str = "it", *, leave: bool = True,
        progress: bool | None = None):
    """A progress bar advanced with ``.update(n)``; a silent stand-in when progress is off.

    Args:
        total: number of units of the whole loop (``None``: unknown).
        desc: a short label shown before the bar.
        unit: the name of one unit (``"step"``, ``"checkpoint"``).
        leave: keep the finished bar on screen.
        progress: force on/off; ``None`` follows ``HELPERS_PROGRESS`` (see the module docstring).

    Returns:
        an object with ``update(n)``, ``set_postfix(**values)``, ``close()``, usable with ``with``.
    """
    if total is not None:
        total = _checks.integer(total, "total", low=0)
    _check_common(desc, unit, leave, progress)
    if not enabled(progress):
        return _Silent()
    return _tqdm(total, desc, unit, leave)


def track(iterable: Iterable, desc: str | None = None, total: int | None = None, *, unit: str = "it",
          leave: bool = True, progress: bool | None = None) -> Iterable:
    """``iterable``, with a progress bar over it when progress is on (else ``iterable`` itself).

    Args:
        iterable: the loop's iterable (``for K in track(checkpoints, "kernels"): ...``).
        desc, unit, leave, progress: as in ``bar``.
        total: its length when ``len(iterable)`` does not exist (a generator).

    Returns:
        an iterable yielding the same items in the same order.
    """
    try:
        iter(iterable)
    except TypeError:
        raise TypeError(f"iterable must be iterable (a list, range, generator); got {_checks.describe(iterable)}") from None
    if total is not None:
        total = _checks.integer(total, "total", low=0)
    _check_common(desc, unit, leave, progress)
    if not enabled(progress):
        return iterable
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)
    return _iterate(iterable, _tqdm(total, desc, unit, leave))


def _iterate(iterable, pbar):
    try:
        for item in iterable:
            yield item
            pbar.update(1)
    finally:
        pbar.close()
