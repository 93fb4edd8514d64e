"""Hypothesis settings for the fuzz tests: short by default, a soak run through FAIRPOOL_FUZZ_EXAMPLES.

Every fuzz test asks ``fuzz_settings(n)`` for its settings: ``n`` examples
normally (the whole fuzz set stays well under a minute on two busy cores),
or ``FAIRPOOL_FUZZ_EXAMPLES`` examples each when that variable is set, e.g.
``FAIRPOOL_FUZZ_EXAMPLES=20000 pytest tests/trunk/test_fuzz_frames.py``
for a local soak. The profiles are registered (``fuzz``, ``fuzz-soak``) but
never loaded globally: other Hypothesis tests keep their own settings.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, Phase, settings

ENV = "FAIRPOOL_FUZZ_EXAMPLES"

_SOAK = os.environ.get(ENV, "").strip()
SOAK_EXAMPLES = int(_SOAK) if _SOAK.isdigit() and int(_SOAK) > 0 else 0

settings.register_profile(
    "fuzz",
    deadline=None,  # two busy cores: wall-clock time per example means nothing here
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    print_blob=True,  # a failure prints the blob that reproduces it
)
settings.register_profile("fuzz-soak", settings.get_profile("fuzz"), phases=[Phase.generate, Phase.shrink],
                          database=None)


def fuzz_settings(examples: int) -> settings:
    """Settings for one fuzz test: ``examples`` normally, FAIRPOOL_FUZZ_EXAMPLES in a soak run."""
    if SOAK_EXAMPLES:
        return settings(settings.get_profile("fuzz-soak"), max_examples=SOAK_EXAMPLES)
    return settings(settings.get_profile("fuzz"), max_examples=examples)
