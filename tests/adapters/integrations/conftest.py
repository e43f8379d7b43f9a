"""LiteLLM runs offline in these tests: its model cost map is the packaged one."""

from __future__ import annotations

import os

# Read when litellm is first imported: never fetch the cost map over the network.
os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
