"""Input checks of the estimators' repeated calls: scikit-learn's, and a cheap path for the common case.

``validate_data``, ``check_classification_targets`` and the label look-up
(``np.unique``, ``np.setdiff1d``) cost some 0.2 ms per call whatever the number
of rows: most of a ``partial_fit`` on one example or a ``predict`` on one
row. For the common case of a later call, a NumPy array (exactly
``np.ndarray``, any memory layout) of float32/float64 rows of the fitted width, every
value finite, from an estimator fitted without feature names, and (training)
integer labels of the classes' own dtype, all of them among the classes,
those checks reduce to a few comparisons, which is what :func:`rows` and
:func:`labelled_rows` do. Anything else (lists, frames, other dtypes, a
wrong width, NaN or inf, unknown labels, no rows ...) goes through
scikit-learn's functions exactly as before, so malformed input raises the
same errors and is converted the same way.
"""

from __future__ import annotations

import math

import numpy as np
from sklearn.utils.multiclass import _check_partial_fit_first_call, check_classification_targets
from sklearn.utils.validation import validate_data

#: The floating dtypes the estimators accept as they are (``validate_data(dtype=...)``).
FLOAT_DTYPES = (np.float32, np.float64)
_FLOATS = tuple(np.dtype(t) for t in FLOAT_DTYPES)


def _plain_rows(est, X):
    """True if ``validate_data(est, X, dtype=FLOAT_DTYPES, reset=False)`` would return ``X`` itself."""
    return (type(X) is np.ndarray and X.ndim == 2 and X.dtype in _FLOATS and X.shape[0] > 0
            and X.shape[1] == getattr(est, "n_features_in_", None)
            and not hasattr(est, "feature_names_in_") and finite_sum(X))


def rows(est, X):
    """``validate_data(est, X, dtype=FLOAT_DTYPES, reset=False)`` (``est`` fitted)."""
    if _plain_rows(est, X):
        return X
    return validate_data(est, X, dtype=list(FLOAT_DTYPES), reset=False)


def label_indices(classes, y):
    """Index of each label of ``y`` in the sorted ``classes``; ValueError naming labels not among them."""
    unknown = np.setdiff1d(np.unique(y), classes)
    if unknown.size:
        raise ValueError(f"labels {unknown.tolist()} are not in classes={classes.tolist()}")
    return np.searchsorted(classes, y)


def plain_label_indices(classes, y, n):
    """Indices of ``y`` in the sorted ``classes`` when ``y`` is a NumPy array (exactly ``np.ndarray``)
    of ``n`` integer labels of the classes' own dtype, all among them; else None (the caller then
    checks ``y`` with scikit-learn, which raises or converts as it always did)."""
    if not (type(y) is np.ndarray and y.ndim == 1 and y.dtype.kind in "iu" and y.dtype == classes.dtype
            and y.shape[0] == n and n > 0):
        return None
    idx = classes.searchsorted(y)
    if n == 1:  # one label: the same test on scalars, cheaper
        i = int(idx[0])
        return idx if i < classes.size and classes[i] == y[0] else None
    return idx if idx.max() < classes.size and (classes[idx] == y).all() else None


def finite_sum(X):
    """True if the sum of ``X`` is finite: then every value is (NaN and inf propagate); a sum that
    overflows only sends finite rows down scikit-learn's path, which accepts them."""
    return math.isfinite(np.add.reduce(X, axis=None))


def labelled_rows(est, X, y):
    """A later ``partial_fit``'s ``(X, label indices)``: as ``validate_data(est, X, y,
    dtype=FLOAT_DTYPES, reset=False)``, ``check_classification_targets(y)`` and
    :func:`label_indices` of ``est.classes_`` give them."""
    classes = est.classes_
    if type(X) is np.ndarray and X.ndim == 2:
        idx = plain_label_indices(classes, y, X.shape[0])
        if idx is not None and _plain_rows(est, X):
            return X, idx
    X, y = validate_data(est, X, y, dtype=list(FLOAT_DTYPES), reset=False)
    check_classification_targets(y)
    return X, label_indices(classes, y)


def partial_fit_rows(est, X, y, classes):
    """``(first, X, y_idx)`` of a ``partial_fit`` call: on the first call (``classes`` given,
    ``est.classes_`` set from it) scikit-learn's full checks, which also record
    ``n_features_in_``; on later calls :func:`labelled_rows` (the same errors, cheap for plain arrays)."""
    first = _check_partial_fit_first_call(est, classes)
    if first:
        X, y = validate_data(est, X, y, dtype=list(FLOAT_DTYPES), reset=True)
        check_classification_targets(y)
        return True, X, label_indices(est.classes_, y)
    X, y_idx = labelled_rows(est, X, y)
    return False, X, y_idx
