"""Provider translation: failure classification, scrubbing, problem details, reports, secrets."""

from __future__ import annotations

from routeledger.adapters.providers.observe import Observation, observe_exception, observe_response
from routeledger.adapters.providers.problems import Problem
from routeledger.adapters.providers.scrub import DEFAULT_SCRUBBER, Scrubber
from routeledger.adapters.providers.secrets import EnvironmentSecretReader

__all__ = [
    "DEFAULT_SCRUBBER",
    "EnvironmentSecretReader",
    "Observation",
    "Problem",
    "Scrubber",
    "observe_exception",
    "observe_response",
]
