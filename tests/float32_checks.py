"""scikit-learn's one float32 check our estimators may fail, and the tolerance test that replaces it
(a helper module of the tests, not a test file).

float32 products of a one-row batch go through BLAS's matrix-vector kernel, a larger batch
through the matrix-matrix kernel, which sum in another order (differences ~1e-7 to 2e-7 on
AVX-512 machines) against ``check_methods_subset_invariance``'s atol 1e-7.
"""

import numpy as np

#: ``expected_failed_checks`` of ``parametrize_with_checks`` for our float32 estimators
FLOAT32_EXPECTED_FAILED = {"check_methods_subset_invariance": "float32 BLAS rounding differs with batch size"}


def assert_subset_invariant(est, X):
    """Scores of row subsets equal those in the full batch to float32 precision; predictions exactly."""
    full = est.predict_proba(X[:200])
    for start, stop in ((0, 1), (7, 8), (10, 60), (150, 200)):
        np.testing.assert_allclose(est.predict_proba(X[start:stop]), full[start:stop], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(np.concatenate([est.predict(X[k:k + 1]) for k in range(50)]), est.predict(X[:50]))
