"""The segregated-dendrite network (Guerguiev, Lillicrap & Richards 2017, eLife 6:e22901).

One package, layered from the estimator down to the compiled loop; each layer
knows nothing of the ones above it and nothing of optuna, Snakemake or files:

* :mod:`.spec`: the registry entry (``SPEC``): search space, default, builder;
* :mod:`.estimator`: :class:`SegregatedDendriteClassifier`, the scikit-learn API;
* :mod:`.config`: every number and switch of a network and their validation;
* :mod:`.simulator`: phases, the learning rule's updates, random streams;
* :mod:`.state`: weights and per-example state arrays;
* :mod:`._kernel`: the numba-compiled step loop, local errors and online update.
"""

from bioplaus.models.segdend.config import SWITCHES, settle_rule
from bioplaus.models.segdend.estimator import SegregatedDendriteClassifier
from bioplaus.models.segdend.spec import DEFAULT_PARAMS, SPEC, build, search_space, warm_up

__all__ = ["SegregatedDendriteClassifier", "SPEC", "DEFAULT_PARAMS", "SWITCHES", "build",
           "search_space", "settle_rule", "warm_up"]
