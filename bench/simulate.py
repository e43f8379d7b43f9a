"""F8 figures: how fast the seeded fleet simulation runs the real engine under faults.

Figures: simulate.seeds_per_s (seeds of the default shape -- 3 gateways, 3 providers,
200 requests, swarm faults -- per second, one process), simulate.speedup_x (simulated
gateway time over real time).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import figure

from routeledger.adapters.testing.simulation import run_campaign

#: A short campaign: ~10 s on the 2-core reference machine.
SEEDS = range(1_000, 1_040)


def main() -> None:
    campaign = run_campaign(SEEDS)
    if not campaign.ok:
        print(campaign.summary(), file=sys.stderr)
        raise SystemExit("bench: the simulation campaign failed")
    figure("simulate.seeds_per_s", campaign.seeds_per_s, "seeds/s")
    figure("simulate.speedup_x", campaign.speedup_x, "x")


if __name__ == "__main__":
    main()
