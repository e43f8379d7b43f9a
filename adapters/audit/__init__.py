"""Audit tools over a store: verified replay and what-if re-decision."""

from __future__ import annotations

from routeledger.adapters.audit.replay import VerifyReport, verify_log
from routeledger.adapters.audit.whatif import WhatIfReport, what_if

__all__ = ["VerifyReport", "WhatIfReport", "verify_log", "what_if"]
