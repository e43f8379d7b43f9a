"""Test-wide configuration: Hypothesis profiles.

``dev`` (the default) is fast for local runs; ``ci`` (selected by ``CI=true``, as
``.ci/run`` sets it) runs more examples and longer stateful histories.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "dev",
    max_examples=60,
    stateful_step_count=30,
    deadline=None,
)
settings.register_profile(
    "ci",
    max_examples=400,
    stateful_step_count=80,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)
settings.load_profile(
    os.environ.get("HYPOTHESIS_PROFILE")
    or ("ci" if os.environ.get("CI", "").lower() in {"1", "true", "yes"} else "dev")
)
