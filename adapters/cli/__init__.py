"""The ``routeledger`` command line (``main``) and the demo it runs."""

from __future__ import annotations
