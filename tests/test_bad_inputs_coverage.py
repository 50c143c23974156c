"""Every public function of every public helpers module has a bad-input case (issue 12).

The tables live in ``tests/test_bad_inputs_*.py`` (a ``CASES`` list each, built on
``tests/_badinput.py``). This test imports them all and requires that every module
``helpers/<name>.py`` not starting with ``_`` has a case for each of its public functions.
"""

import importlib
import sys
from pathlib import Path

from _badinput import public_functions

ROOT = Path(__file__).resolve().parents[1]


def test_every_public_function_of_every_module_has_a_case():
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    covered = set()
    for path in sorted((ROOT / "tests").glob("test_bad_inputs_*.py")):
        if path.stem == "test_bad_inputs_coverage":
            continue
        table = importlib.import_module(path.stem)
        covered.update((c.func.__module__, c.func.__name__) for c in table.CASES)
    missing = []
    for path in sorted((ROOT / "helpers").glob("*.py")):
        if path.stem.startswith("_"):
            continue
        module = importlib.import_module(f"helpers.{path.stem}")
        missing += [f"{module.__name__}.{name}" for name in public_functions(module) if (module.__name__, name) not in covered]
    assert not missing, f"public functions without a bad-input case: {missing}"
