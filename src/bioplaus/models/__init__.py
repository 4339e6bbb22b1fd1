"""Estimators (scikit-learn API) and the model registry.

Estimator classes are imported lazily so that importing one model does not pay
for the others::

    from bioplaus.models import SegregatedDendriteClassifier, CNNClassifier
    from bioplaus.models import get_model, available_models
"""

from bioplaus.models.registry import ModelSpec, available_models, get_model

_LAZY = {
    "SegregatedDendriteClassifier": "bioplaus.models.segdend",
    "CNNClassifier": "bioplaus.models.cnn",
    "FeedbackAlignmentClassifier": "bioplaus.models.feedback_alignment",
    "DirectFeedbackAlignmentClassifier": "bioplaus.models.feedback_alignment",
    "SignSymmetryClassifier": "bioplaus.models.feedback_alignment",
    "BackpropSGDClassifier": "bioplaus.models.feedback_alignment",
    "BurstpropClassifier": "bioplaus.models.burstprop",
}

__all__ = ["ModelSpec", "available_models", "get_model", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'bioplaus.models' has no attribute {name!r}")
