"""Machinery of the bad-input sweep (issue 12): every public function of ``helpers`` must
answer bad input with a ``TypeError`` or ``ValueError`` that names the argument.

Each module has a test file ``tests/test_bad_inputs_<module>.py`` that declares a table::

    CASES = [
        Case(tms.alignment, (vecs_with_nan, features), {}, "eigenvectors"),
        ...
    ]

and calls ``run_case`` on each and ``check_coverage`` once. A case passes when the call raises
``TypeError``/``ValueError`` whose message contains ``names`` (the argument's name; several
alternatives may be given as a tuple). A call that returns anything, or raises another
exception type (a ``ZeroDivisionError``, a JAX ``TypeError`` from inside ``dot_general`` is a
TypeError but does not name the argument), fails the case.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable


@dataclass
class Case:
    func: Callable
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)
    names: Any = ""  # substring(s) the message must contain: the offending argument
    why: str = ""  # what is bad about the input (shown in the test id)

    @property
    def id(self) -> str:
        return f"{self.func.__module__.split('.')[-1]}.{self.func.__name__}:{self.why or self.names}"


def run_case(case: Case) -> None:
    try:
        result = case.func(*case.args, **case.kwargs)
    except (TypeError, ValueError) as err:
        message = str(err)
        names = case.names if isinstance(case.names, tuple) else (case.names,)
        assert any(n in message for n in names), (
            f"{case.id}: the error does not name the argument {names}: {type(err).__name__}: {message}"
        )
        return
    except Exception as err:  # noqa: BLE001 - any other exception type is a defect here
        raise AssertionError(f"{case.id}: raised {type(err).__name__} instead of TypeError/ValueError: {err}") from err
    raise AssertionError(f"{case.id}: returned {type(result).__name__} without an error")


def public_functions(module) -> list[str]:
    names = getattr(module, "__all__", None)
    if names is None:
        names = [n for n in dir(module) if not n.startswith("_")]
    return [n for n in names if inspect.isfunction(getattr(module, n)) and getattr(module, n).__module__ == module.__name__]


def check_coverage(module, cases: list[Case], exempt: dict[str, str] | None = None) -> None:
    """Every public function of ``module`` has at least one case, or an exemption with a reason."""
    exempt = exempt or {}
    covered = {c.func.__name__ for c in cases if c.func.__module__ == module.__name__}
    missing = [n for n in public_functions(module) if n not in covered and n not in exempt]
    assert not missing, f"{module.__name__}: public functions with no bad-input case: {missing}"
