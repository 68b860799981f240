"""Sparseness and complexity: hand values, bounds, and Quantus 0.6 on the same arrays."""

import numpy as np
import pytest

from napari_lrp.metrics.complexity import complexity, sparseness
from tests.metrics._quantus import import_quantus


def test_hand_values():
    a = np.array([0.0, 1.0, -1.0, 2.0])  # |a| sorted 0, 1, 1, 2: (0 - 1 + 1 + 6) / (4 * 4)
    assert sparseness(a) == pytest.approx(0.375, abs=1e-15)
    assert sparseness([0.0, 0.0, 0.0, -5.0]) == pytest.approx(0.75)  # one element: (n - 1) / n
    assert sparseness(np.ones((2, 3, 4, 5))) == pytest.approx(0.0, abs=1e-15)
    p = np.array([0.25, 0.25, 0.5])
    assert complexity(a) == pytest.approx(-(p * np.log(p)).sum(), abs=1e-15)
    assert complexity(np.ones((2, 3, 4, 5))) == pytest.approx(np.log(120))
    assert complexity([0.0, 3.0]) == 0.0
    assert np.isnan(sparseness(np.zeros(4))) and np.isnan(complexity(np.zeros(4)))


def test_equal_to_quantus_on_the_same_arrays():
    quantus = import_quantus()
    rng = np.random.default_rng(1)
    a = rng.gamma(0.5, size=(1, 2, 4, 5, 6)) + 1e-3
    kw = {"disable_warnings": True, "abs": True, "normalise": False}
    # Quantus adds 1e-7 to every element before the Gini index: give it a - 1e-7
    q_sparse = quantus.Sparseness(**kw).evaluate_batch(x_batch=a, a_batch=a.copy() - 1e-7)[0]
    assert sparseness(a) == pytest.approx(q_sparse, abs=1e-6)
    q_complex = quantus.Complexity(**kw).evaluate_batch(x_batch=a, a_batch=a.copy())[0]
    assert complexity(a) == pytest.approx(q_complex, abs=1e-6)
