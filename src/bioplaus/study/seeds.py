"""Seeds derived from a study seed and integer keys, independent of scheduling.

Every random choice of the pipeline (fold split, model initialisation,
epoch shuffling, a sampler's draw for one trial) takes its seed from
``derive_seed(study_seed, purpose, ...)``, never from a shared generator,
so that results depend on the trial number and not on how many workers or
cores ran the trials, nor on where a killed run was resumed.
"""

from __future__ import annotations

import numpy as np

# purposes (first key after the study seed); frozen: renumbering one changes every seed of that purpose
SPLIT = 0
INIT = 1
SAMPLER = 2
REPEAT = 3


def derive_seed(*keys: int) -> int:
    """A 31-bit seed that is a fixed function of the non-negative integer ``keys``."""
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(1)[0] >> 1)
