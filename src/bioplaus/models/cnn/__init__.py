"""The backprop CNN of the reference study, in NumPy (conv -> batch norm -> ReLU -> max pool blocks, Adam).

* :mod:`.spec`: the registry entry (``SPEC``): search space, default, builder;
* :mod:`.estimator`: :class:`CNNClassifier` and the geometry checks;
* :mod:`._network`: the network's forward and backward passes, Adam;
* :mod:`._layers`: convolution (im2col), batch norm, pooling, softmax;
* :mod:`._kernels`: their compiled loops (im2col, col2im, fused batch norm + ReLU + pooling).
"""

from bioplaus.models.cnn.estimator import CNNClassifier, check_geometry, check_params, params_to_estimator_args
from bioplaus.models.cnn.spec import DEFAULT_PARAMS, SPEC, build, search_space

__all__ = ["CNNClassifier", "SPEC", "DEFAULT_PARAMS", "build", "check_geometry", "check_params",
           "params_to_estimator_args", "search_space"]
