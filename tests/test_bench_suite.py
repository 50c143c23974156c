"""The benchmark suite's bookkeeping (benchmarks/entk_suite); no time is asserted anywhere.

* the committed table (benchmarks/results/results.md, included by the book's Performance page)
  is exactly what ``report.py`` makes of the committed ``results.json``: nothing typed in;
* ``common.measure`` refuses to time an output that differs from its reference;
* ``common.rel_diff`` agrees with a plain numpy computation.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
sys.path.insert(0, str(ROOT))

from benchmarks.entk_suite import common, report  # noqa: E402


def test_committed_table_is_generated_from_the_json():
    path = RESULTS / "results.json"
    if not path.exists():
        pytest.skip("no recorded run of the suite")
    results = json.loads(path.read_text())
    assert (RESULTS / "results.md").read_text() == report.markdown(results), (
        "benchmarks/results/results.md differs from what report.py makes of results.json: "
        "regenerate it with `python -m benchmarks.entk_suite.report`"
    )


def test_measure_does_not_time_a_wrong_output():
    ref = np.arange(12.0).reshape(3, 4)
    calls = []

    def wrong():
        calls.append(1)
        return ref + 1e-2 * np.abs(ref).max()

    res = common.measure(wrong, lambda out: {"error": common.rel_diff(out, ref)}, repeats=5, tolerance=1e-4)
    assert res["status"] == "mismatch" and len(calls) == 1 and "median" not in res
    res = common.measure(lambda: ref.copy(), lambda out: {"error": common.rel_diff(out, ref)}, repeats=5, tolerance=1e-4)
    assert res["status"] == "ok" and len(res["times"]) == 5 and res["min"] <= res["median"] <= res["max"]


def test_rel_diff_matches_numpy():
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((6, 5, 3, 3)).astype(np.float32)
    a = ref.copy()
    a[4, 2, 1, 0] += 0.5
    expected = 0.5 / np.abs(ref.astype(np.float64)).max()
    assert abs(common.rel_diff(a, ref) - expected) < 1e-6 * expected
    with pytest.raises(ValueError, match="shape"):
        common.rel_diff(a[:2], ref)
