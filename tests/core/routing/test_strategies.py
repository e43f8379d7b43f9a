"""The ranked strategies (G6): ``least_in_flight``, ``least_latency`` and ``lowest_cost`` examine a
pool best first by a key folded from the log or the policy, deterministically."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from routeledger.core.routing import (
    CredentialSpec,
    Failed,
    FailureClass,
    Member,
    ModelSpec,
    Policy,
    Route,
    Strategy,
    Succeeded,
    Target,
)
from routeledger.core.routing.events import AttemptRouted, RoutingEvent
from routeledger.core.routing.selection import EXPLORE_ONE_IN, RANKED_SORT_MAX, mix64
from routeledger.core.routing.state import LATENCY_WEIGHT

from .support import World, only, policy, target

_EXPLORE_SALT = 0x5EED_E7B1


def _routed(events: tuple[RoutingEvent, ...]) -> AttemptRouted:
    routed = only(events, AttemptRouted)
    assert len(routed) == 1, events
    result = routed[0]
    assert isinstance(result, AttemptRouted)
    return result


def _seed_that_does_not_explore(salt: int = 1) -> int:
    """A request seed whose first decision does not explore (``least_latency``)."""
    return next(s for s in range(1000) if mix64(s, salt ^ _EXPLORE_SALT) % EXPLORE_ONE_IN)


def test_least_in_flight_routes_to_the_member_with_fewest_attempts_in_flight() -> None:
    """Each new request goes to a member with the fewest unanswered attempts; an answer
    makes its member the least loaded again."""
    world = World(
        policy({"chat": [target("k1/m", "k2/m", "k3/m", strategy=Strategy.LEAST_IN_FLIGHT)]})
    )
    chosen = []
    for n in range(4):
        world.start(f"r{n}")
        chosen.append(_routed(world.next(f"r{n}")).credential_id)
    assert chosen == ["k1", "k2", "k3", "k1"]  # ties go to the first member
    world.succeed("r1")  # k2 has nothing in flight now
    world.start("r9")
    assert _routed(world.next("r9")).credential_id == "k2"
    assert world.state.in_flight == {"pair:k1:m": 2, "pair:k2:m": 1, "pair:k3:m": 1}


def test_least_latency_prefers_the_fastest_measured_member_and_explores_by_seed() -> None:
    """After answers with their time to first token, a request goes to the pair with the
    lowest moving estimate; one request in EXPLORE_ONE_IN (by its seed) starts elsewhere."""
    world = World(policy({"chat": [target("k1/m", "k2/m", strategy=Strategy.LEAST_LATENCY)]}))
    seed = _seed_that_does_not_explore()
    for n, ttft in enumerate((900_000, 120_000)):
        request = f"warm{n}"
        world.start(request, seed=seed)  # unmeasured pairs rank first: k1, then k2
        assert _routed(world.next(request)).credential_id == f"k{n + 1}"
        world.outcome(Succeeded(output_tokens=3, ttft_us=ttft), request)
    latency = world.state.latency
    assert latency == {"pair:k1:m": 900_000, "pair:k2:m": 120_000}
    world.start("fast", seed=seed)
    assert _routed(world.next("fast")).credential_id == "k2"
    # The moving estimate follows new samples by 1/LATENCY_WEIGHT.
    before = latency["pair:k2:m"]
    world.outcome(Succeeded(output_tokens=3, ttft_us=before + 800_000), "fast")
    assert world.state.latency["pair:k2:m"] == before + 800_000 // LATENCY_WEIGHT
    explorer = next(s for s in range(1000) if mix64(s, 1 ^ _EXPLORE_SALT) % EXPLORE_ONE_IN == 0)
    world.start("explore", seed=explorer)
    assert _routed(world.next("explore")).member_index == mix64(explorer, 1) % 2


def _priced() -> Policy:
    """``cheap-in`` has cheap input and dear output; ``cheap-out`` the reverse."""
    return Policy(
        credentials=(CredentialSpec(id="k", provider="openai"),),
        models=(
            ModelSpec(
                id="cheap-in",
                input_micros_per_mtok=1,
                output_micros_per_mtok=100,
                max_output_tokens=10,
            ),
            ModelSpec(
                id="cheap-out",
                input_micros_per_mtok=10,
                output_micros_per_mtok=1,
                max_output_tokens=10,
            ),
        ),
        routes=(
            Route(
                alias="chat",
                chain=(
                    Target(
                        strategy=Strategy.LOWEST_COST,
                        members=(
                            Member(credential="k", model="cheap-out"),
                            Member(credential="k", model="cheap-in"),
                        ),
                    ),
                ),
            ),
        ),
    )


def test_lowest_cost_ranks_by_the_requests_own_estimate() -> None:
    """A short prompt goes to the model whose worst-case output is cheapest; a long prompt to
    the one whose input is cheapest (cost = input tokens x input price + max output x output price)."""
    world = World(_priced())
    world.start("short", input_tokens=10)  # cheap-out: 100 + 10 = 110; cheap-in: 10 + 1000
    assert _routed(world.next("short")).upstream_model == "cheap-out"
    world.start("long", input_tokens=1_000)  # cheap-out: 10,000 + 10; cheap-in: 1,000 + 1,000
    assert _routed(world.next("long")).upstream_model == "cheap-in"


@given(
    loads=st.lists(st.integers(0, 3), min_size=RANKED_SORT_MAX + 1, max_size=40),
    seed=st.integers(0, 2**32),
)
def test_a_large_pool_takes_the_better_of_two_seeded_draws(loads: list[int], seed: int) -> None:
    """Past RANKED_SORT_MAX members a ranked pool starts at the better of two draws seeded by
    the request (power of two choices), so a decision stays O(1) and never picks the worse."""
    size = len(loads)
    members = [f"k{i}/m" for i in range(size)]
    world = World(policy({"chat": [target(*members, strategy=Strategy.LEAST_IN_FLIGHT)]}))
    world.state.in_flight = {f"pair:k{i}:m": n for i, n in enumerate(loads) if n}
    world.start("r", seed=seed)
    salt = 1  # the first attempt at chain position 0
    first = mix64(seed, salt) % size
    second = mix64(seed, salt + 1) % size
    second = second if second != first else (first + 1) % size
    picked = _routed(world.next("r")).member_index
    assert picked in (first, second)
    assert loads[picked] == min(loads[first], loads[second])


def test_an_exploring_request_in_a_large_least_latency_pool_starts_at_its_first_draw() -> None:
    """Past RANKED_SORT_MAX members, a least_latency request that explores (one in
    EXPLORE_ONE_IN, by its seed) starts at its first seeded draw, not at the faster draw."""
    size = RANKED_SORT_MAX + 4
    members = [f"k{i}/m" for i in range(size)]
    world = World(policy({"chat": [target(*members, strategy=Strategy.LEAST_LATENCY)]}))
    salt = 1  # the first attempt at chain position 0
    explorer = next(
        s
        for s in range(10_000)
        if mix64(s, salt ^ _EXPLORE_SALT) % EXPLORE_ONE_IN == 0
        and mix64(s, salt) % size != mix64(s, salt + 1) % size
    )
    first, second = mix64(explorer, salt) % size, mix64(explorer, salt + 1) % size
    # The second draw is far faster: a request that does not explore would start there.
    world.state.latency = {f"pair:k{i}:m": 900_000 for i in range(size)}
    world.state.latency[f"pair:k{second}:m"] = 1_000
    world.start("explore", seed=explorer)
    assert _routed(world.next("explore")).member_index == first


def test_a_group_view_counts_like_folding_one_by_one() -> None:
    """The group committer's view follows routed attempts, answers and waits exactly as folding
    them would: in-flight counts and latency estimates included, the real state untouched."""
    from routeledger.core.routing.events import WaitDecided
    from routeledger.core.routing.group import group_view, note_in_view

    world = World(policy({"chat": [target("k1/m", "k2/m", strategy=Strategy.LEAST_IN_FLIGHT)]}))
    world.start("a")
    world.start("b")
    view = group_view(world.state)
    routed_a = world.next("a")
    answered = world.outcome(Succeeded(output_tokens=1, ttft_us=5_000), "a")
    wait = WaitDecided(
        stream_id="request:b",
        version=2,
        at_us=world.now,
        request_id="b",
        until_us=world.now + 1,
        recovering=(),
        waited_total_us=1,
    )
    world.start("c")
    routed_c = world.next("c")
    failed_c = world.outcome(Failed(failure=FailureClass.TIMEOUT_BEFORE_RESPONSE), "c")
    note_in_view(view, (*routed_a, *answered, wait, *routed_c, *failed_c))
    assert view.in_flight == world.state.in_flight == {}
    assert view.latency == world.state.latency == {"pair:k1:m": 5_000}
    assert view.in_flight is not world.state.in_flight


def test_an_outcome_with_a_malformed_timing_is_refused() -> None:
    """A negative time to first token is a CommandError naming the field; nothing is folded."""
    import pytest

    from routeledger.core.errors import CommandError

    world = World(policy({"chat": [target("k1/m")]}))
    world.start("r")
    world.next("r")
    with pytest.raises(CommandError, match="ttft_us"):
        world.outcome(Succeeded(output_tokens=1, ttft_us=-1), "r")
