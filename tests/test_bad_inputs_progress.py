"""Bad-input cases of helpers.progress (machinery in tests/_badinput.py)."""

import pytest

from helpers import progress
from _badinput import Case, check_coverage, run_case

CASES = [
    Case(progress.mode, ("loud",), {}, "value", "unknown setting"),
    Case(progress.mode, (1,), {}, "value", "not a string"),
    Case(progress.enabled, ("yes",), {}, "progress", "string instead of bool"),
    Case(progress.bar, (-1,), {}, "total", "negative total"),
    Case(progress.bar, (2.5,), {}, "total", "float total"),
    Case(progress.bar, (10, 3), {}, "desc", "desc not a string"),
    Case(progress.bar, (10,), {"unit": ""}, "unit", "empty unit"),
    Case(progress.bar, (10,), {"leave": "no"}, "leave", "leave not a bool"),
    Case(progress.track, (5,), {}, "iterable", "not iterable"),
    Case(progress.track, ([1, 2],), {"total": -2}, "total", "negative total"),
    Case(progress.track, ([1, 2],), {"progress": 1}, "progress", "int instead of bool"),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_bad_input(case):
    run_case(case)


def test_every_public_function_has_a_case():
    check_coverage(progress, CASES)
