"""The layered-network family that the dense models share: depth and widths as hyperparameters.

Every fully connected model of the study (the backprop MLP, the
segregated-dendrite network and the other biologically plausible rules)
searches the same architecture space as the reference study: 1 to
``MAX_LAYERS`` hidden layers of 30-500 units, sampled as ``num_layers`` and
``h_l_1`` .. ``h_l_6`` (a fixed set of names: the Gaussian-process sampler
needs a fixed dimension; widths beyond ``num_layers`` are drawn and unused).
"""

from __future__ import annotations

from typing import Any, Mapping

from optuna.distributions import BaseDistribution, IntDistribution

#: Deepest network of the search spaces (hidden layers).
MAX_LAYERS = 6
#: Units per hidden layer searched by the reference study.
MIN_UNITS, MAX_UNITS = 30, 500


def width_name(i: int) -> str:
    """Name of the width of hidden layer ``i`` (1-based) in a search space."""
    return f"h_l_{i}"


def hidden_layer_space() -> dict[str, BaseDistribution]:
    """``num_layers`` and the widths ``h_l_1`` .. ``h_l_6`` as optuna distributions."""
    space: dict[str, BaseDistribution] = {"num_layers": IntDistribution(1, MAX_LAYERS)}
    for i in range(1, MAX_LAYERS + 1):
        space[width_name(i)] = IntDistribution(MIN_UNITS, MAX_UNITS)
    return space


def hidden_sizes(params: Mapping[str, Any]) -> tuple[int, ...]:
    """Units of the first ``num_layers`` hidden layers, from ``h_l_1`` .. ``h_l_6``."""
    return tuple(int(params[width_name(i)]) for i in range(1, int(params["num_layers"]) + 1))


def default_widths(first: int, n_first: int, rest: int) -> dict[str, int]:
    """Widths of a default setting: ``first`` units in layers 1..``n_first``, ``rest`` above."""
    return {width_name(i): first if i <= n_first else rest for i in range(1, MAX_LAYERS + 1)}


def unused_widths(params: Mapping[str, Any], prefixes: tuple[str, ...] = ("h_l_",), max_layers: int = MAX_LAYERS) -> list[str]:
    """Per-layer hyperparameters (``<prefix><i>``) of layers beyond ``num_layers``: drawn, but unused."""
    n = int(round(float(params["num_layers"])))
    return [f"{p}{i}" for p in prefixes for i in range(n + 1, max_layers + 1)]
