"""The one seed rule of every command and function: a seed is a whole number from 0 to 2**63 - 1 (what a
``torch.Generator`` and NumPy's ``SeedSequence`` both take)."""

from __future__ import annotations

from nmflowgan.errors import BadInputError

MAX_SEED = 2**63 - 1
SEED_RULE = f"a whole number from 0 to {MAX_SEED} (2**63 - 1)"


def checked_seed(seed: object) -> int:
    """``seed`` if it follows the rule, else BadInputError naming it and the rule."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise BadInputError(f"seed {seed!r} is not {SEED_RULE}")
    return seed
