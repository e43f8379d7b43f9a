"""Random histories of requests, attempts, outcomes and time against a naive recompute-from-the-log model.

After every step the machine checks A1-A7 and D2/D3: the reducer's view of
every pair and credential equals what a naive model recomputes from the raw
event list, and every decision respected availability at its time.
"""

from __future__ import annotations

from collections import defaultdict

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from routeledger.core.routing import (
    Failed,
    FailureClass,
    Phase,
    RecordOutcome,
    RequestLimits,
    RouteNext,
    StartRequest,
    Strategy,
    Succeeded,
    decide_next,
    decide_outcome,
    decide_start,
    fold,
    initial,
)
from routeledger.core.routing import decide as decide_module
from routeledger.core.routing import index as index_module
from routeledger.core.routing.events import (
    Announced,
    AttemptFailed,
    AttemptRouted,
    AttemptSucceeded,
    CooldownCleared,
    CooldownExtended,
    CooldownStarted,
    CredentialSuspended,
    Degraded,
    ExhaustedReason,
    ExhaustionPredicted,
    FallbackExhausted,
    PairSuspended,
    PredictionCleared,
    ProbeAllowed,
    ProbeReleased,
    RoutingEvent,
)
from routeledger.core.routing.failures import Evidence
from routeledger.core.routing.group import group_view, note_in_view, request_local
from routeledger.core.routing.policy import COOLDOWN_US_MAX
from routeledger.core.routing.state import Status, status_at

from .support import S, World, policy, snapshot, target

CALLER_CAUSED = {
    FailureClass.CONTEXT_LENGTH_EXCEEDED,
    FailureClass.CONTENT_FILTERED,
    FailureClass.INVALID_REQUEST,
    FailureClass.RESPONSE_REJECTED,
    FailureClass.CALLER_CANCELLED,
    FailureClass.GATEWAY_POOL_EXHAUSTED,
}
BLOCKS = (CooldownStarted, CooldownExtended, PairSuspended, CredentialSuspended)


def naive_status(log: list[RoutingEvent], stream: str, now: int) -> Status:
    """Recompute a scope's status from the raw log: max deadline since the last real heal (A2, A4)."""
    until, blocked, probe_until, suspended_until = 0, False, 0, 0
    for e in log:
        if e.stream_id != stream:
            continue
        if isinstance(e, CooldownCleared):
            until, blocked, probe_until, suspended_until = 0, False, 0, 0
        elif isinstance(e, BLOCKS):
            until = max(until, e.until_us)
            if isinstance(e, PairSuspended | CredentialSuspended):
                suspended_until = e.until_us
            blocked, probe_until = True, 0
        elif isinstance(e, ProbeAllowed):
            probe_until = e.until_us
        elif isinstance(e, ProbeReleased):  # its attempt proved nothing: the slot is free
            probe_until = 0
    if until > now:
        return Status.SUSPENDED if suspended_until >= until else Status.COOLING
    if not blocked:
        return Status.AVAILABLE
    return Status.PROBING if probe_until > now else Status.HALF_OPEN


def naive_predicted(log: list[RoutingEvent], stream: str) -> int:
    """Recompute a pair's predicted exhaustion from the raw log: its latest prediction, if not cleared."""
    until = 0
    for e in log:
        if e.stream_id == stream and isinstance(e, ExhaustionPredicted):
            until = e.until_us
        elif e.stream_id == stream and isinstance(e, PredictionCleared):
            until = 0
    return until


#: Announcements an outcome may carry: nothing left (with or without a reset), or room left.
ANNOUNCED = st.one_of(
    st.none(),
    st.builds(
        Announced,
        remaining_requests=st.sampled_from([None, 0, 3]),
        remaining_tokens=st.sampled_from([None, 0, 500]),
        requests_reset_us=st.sampled_from([None, 1, S, 30 * S, 7200 * S]),
        tokens_reset_us=st.sampled_from([None, S // 2]),
    ),
)

MEMBERS = ("k1/a", "k1/b", "k2/a")
PAIRS = ("pair:k1:a", "pair:k1:b", "pair:k2:a", "pair:k3:c", "pair:k4:d")
CREDS = ("cred:k1", "cred:k2", "cred:k3", "cred:k4")


class RoutingMachine(RuleBasedStateMachine):
    """Drives the deciders with random commands; the naive model checks each step."""

    @initialize(strategy=st.sampled_from(Strategy))
    def setup(self, strategy: Strategy) -> None:
        self.world = World(
            policy(
                {
                    "chat": [target(*MEMBERS, strategy=strategy), target("k3/c")],
                    "spare": [target("k4/d")],
                },
                fallback={"chat": ["spare"]},
                account_wide=["k2"],
                prefill=["c"],
                limits=RequestLimits(
                    attempts_max=6, wait_total_us_max=20 * S, probe_timeout_us=5 * S
                ),
            )
        )
        # Index every pool (the real threshold is 32 members) so the O(log n) pick is exercised.
        self.saved_threshold = index_module.TREE_MIN_MEMBERS
        self.saved_scan_first = decide_module.TREE_SCAN_FIRST
        index_module.TREE_MIN_MEMBERS = 2
        decide_module.TREE_SCAN_FIRST = 1
        self.world.state = initial(self.world.policy)
        assert self.world.state.trees
        self.requests = 0
        self.attempts = 0

    def teardown(self) -> None:
        index_module.TREE_MIN_MEMBERS = getattr(
            self, "saved_threshold", index_module.TREE_MIN_MEMBERS
        )

    # ------------------------------------------------------------------ rules

    @rule(
        backups=st.lists(st.sampled_from(["spare", "chat", "nope"]), max_size=2),
        seed=st.integers(0, 9),
    )
    def start_request(self, backups: list[str], seed: int) -> None:
        self.requests += 1
        request_id = f"r{self.requests}"
        world = self.world
        command = StartRequest(
            request_id=request_id,
            route="chat",
            caller_scope="caller",
            backups=tuple(backups),
            seed=seed,
            stream=True,
        )
        (received,) = decide_start(world.policy, world.state, command, now_us=world.now)
        # One commit per request opened: the first step decided beside the
        # unfolded start equals the step decided after folding it.
        step = RouteNext(request_id=request_id, attempt_id=f"first-{request_id}")
        opened = decide_next(world.policy, world.state, step, now_us=world.now, opening=received)
        world.start(request_id, backups=tuple(backups), seed=seed, stream=True)
        assert decide_next(world.policy, world.state, step, now_us=world.now) == opened

    @rule(count=st.integers(2, 5), seed=st.integers(0, 9))
    def open_a_group(self, count: int, seed: int) -> None:
        """Group commit: requests opened one after another on a group view decide what folding each first would."""
        world = self.world
        before = snapshot(world.state)
        view = group_view(world.state)
        grouped = []
        for k in range(count):
            self.requests += 1
            request_id = f"r{self.requests}"
            command = StartRequest(
                request_id=request_id, route="chat", caller_scope="caller", seed=seed + k
            )
            (received,) = decide_start(world.policy, view, command, now_us=world.now)
            step_command = RouteNext(request_id=request_id, attempt_id=f"g-{request_id}")
            step = decide_next(world.policy, view, step_command, now_us=world.now, opening=received)
            grouped.append((received, step_command, step))
            note_in_view(view, step.events)
            if not request_local(step.events, request_id):
                break  # the group ends after an event another request could read
        assert snapshot(world.state) == before, "deciding on a view never touches the state"
        for received, step_command, step in grouped:
            world.apply((received,))
            assert decide_next(world.policy, world.state, step_command, now_us=world.now) == step
            world.apply(step.events)

    def _open(self) -> list[str]:
        return [
            rid
            for rid, req in self.world.state.requests.items()
            if not req.terminal and req.in_flight is None
        ]

    def _in_flight(self) -> list[str]:
        return [rid for rid, req in self.world.state.requests.items() if req.in_flight is not None]

    @precondition(lambda self: bool(self._open()))
    @rule(data=st.data())
    def next_step(self, data: st.DataObject) -> None:
        request_id = data.draw(st.sampled_from(self._open()))
        self.attempts += 1
        command = RouteNext(request_id=request_id, attempt_id=f"a{self.attempts}")
        log_before = list(self.world.log)
        now = self.world.now
        step = decide_next(self.world.policy, self.world.state, command, now_us=now)
        # D3: the unindexed state folded from the raw log decides exactly the same.
        assert decide_next(self.world.policy, fold(self.world.log), command, now_us=now) == step
        events = step.events
        request = self.world.state.requests[request_id]
        if request.wait_until_us > now:
            assert len(events) <= 2
        else:
            decisions = [e for e in events if e.stream_id == f"request:{request_id}"]
            assert len(decisions) == 1, events  # exactly one of the four outcomes
        for e in events:
            if isinstance(e, AttemptRouted):
                # A5/A6: the routed pair and its credential are selectable at attempt time.
                pair = f"pair:{e.credential_id}:{e.upstream_model}"
                for stream in (pair, f"cred:{e.credential_id}"):
                    assert naive_status(log_before, stream, now) in (
                        Status.AVAILABLE,
                        Status.HALF_OPEN,
                    )
                assert naive_predicted(log_before, pair) <= now  # never a pair predicted exhausted
                assert e.chain_position >= request.position  # I3: targets are never revisited
            if isinstance(e, FallbackExhausted) and e.reason is ExhaustedReason.NO_CANDIDATE:
                # A7: exhausted only if no untried member from the current position is available.
                self._check_nothing_available(request_id, log_before, now)
        self.world.apply(events)

    def _check_nothing_available(self, request_id: str, log: list[RoutingEvent], now: int) -> None:
        request = self.world.state.requests[request_id]
        failed = {f"pair:{f.credential_id}:{f.upstream_model}" for f in request.failures}
        start = 0
        last = request.last_failure
        if last is not None:
            start = request.attempts[last.attempt_id].chain_position
            start += 1 if last.phase is Phase.MID_STREAM else 0
        chain = self.world.policy.chain(request.received.route, request.received.backups)
        assert chain is not None
        for plan in chain.targets[start:]:
            for entry in plan.entries:
                pair, cred = entry.pair_stream, entry.cred_stream
                if pair not in failed and naive_predicted(log, pair) <= now:
                    usable = (naive_status(log, pair, now), naive_status(log, cred, now))
                    assert usable != (Status.AVAILABLE, Status.AVAILABLE), (request_id, pair)

    @precondition(lambda self: bool(self._in_flight()))
    @rule(
        data=st.data(),
        outcome=st.one_of(st.sampled_from(list(FailureClass)), st.sampled_from(list(Evidence))),
        phase=st.sampled_from(Phase),
        hint=st.one_of(st.none(), st.integers(0, 10 * 3600 * S)),
        announced=ANNOUNCED,
    )
    def record_outcome(
        self,
        data: st.DataObject,
        outcome: FailureClass | Evidence,
        phase: Phase,
        hint: int | None,
        announced: Announced | None,
    ) -> None:
        request_id = data.draw(st.sampled_from(self._in_flight()))
        if isinstance(outcome, Evidence):
            self.world.outcome(Succeeded(evidence=outcome, announced=announced), request_id)
        else:
            chars = 7 if phase is Phase.MID_STREAM else 0
            self.world.outcome(
                Failed(
                    failure=outcome,
                    phase=phase,
                    delivered_chars=chars,
                    hint_us=hint,
                    announced=announced,
                ),
                request_id,
            )

    @precondition(lambda self: any(r.attempts for r in self.world.state.requests.values()))
    @rule(data=st.data())
    def redeliver_outcome(self, data: st.DataObject) -> None:
        """X1: an outcome delivered again changes nothing."""
        answered = [
            (rid, aid, rec.outcome)
            for rid, req in self.world.state.requests.items()
            for aid, rec in req.attempts.items()
            if rec.outcome is not None
        ]
        if not answered:
            return
        rid, aid, observed = data.draw(st.sampled_from(answered))
        outcome: Succeeded | Failed
        if isinstance(observed, AttemptSucceeded):
            outcome = Succeeded(
                evidence=observed.evidence,
                input_tokens=observed.input_tokens,
                output_tokens=observed.output_tokens,
                announced=observed.announced,
            )
        else:
            assert isinstance(observed, AttemptFailed)
            outcome = Failed(
                failure=observed.failure,
                phase=observed.phase,
                delivered_chars=observed.delivered_chars,
                hint_us=observed.hint_us,
                announced=observed.announced,
            )
        command = RecordOutcome(request_id=rid, attempt_id=aid, outcome=outcome)
        assert (
            decide_outcome(self.world.policy, self.world.state, command, now_us=self.world.now)
            == ()
        )

    @rule(delta=st.sampled_from([0, 1, S // 2, S, 5 * S, 30 * S, 120 * S, 3600 * S]))
    def advance(self, delta: int) -> None:
        self.world.advance(delta)

    # ------------------------------------------------------------------ invariants

    @invariant()
    def a1_failures_land_on_their_scope_only(self) -> None:
        """A1: caller-caused failures block nothing; pair classes block their pair; auth blocks the credential."""
        failures = {e.attempt_id: e for e in self.world.log if isinstance(e, AttemptFailed)}
        for e in self.world.log:
            if isinstance(e, BLOCKS):
                cause = failures[e.attempt_id]
                assert cause.failure not in CALLER_CAUSED
                if e.stream_id.startswith("pair:"):
                    assert e.stream_id == f"pair:{cause.credential_id}:{cause.upstream_model}"
                else:
                    assert e.stream_id == f"cred:{cause.credential_id}"
                    assert cause.failure in (FailureClass.AUTH_ERROR, FailureClass.QUOTA_EXHAUSTED)

    @invariant()
    def a2_deadlines_only_extend(self) -> None:
        """A2: between heals, successive block deadlines of a scope never decrease."""
        last: dict[str, int] = defaultdict(int)
        for e in self.world.log:
            if isinstance(e, CooldownCleared):
                last[e.stream_id] = 0
            elif isinstance(e, BLOCKS):
                assert e.until_us >= last[e.stream_id]
                last[e.stream_id] = e.until_us

    @invariant()
    def a3_blocks_are_bounded_and_self_expiring(self) -> None:
        """A3: every block lasts at most COOLDOWN_US_MAX past the moment it was decided."""
        for e in self.world.log:
            if isinstance(e, BLOCKS):
                assert 0 < e.until_us - e.at_us <= COOLDOWN_US_MAX

    @invariant()
    def a4_only_real_success_heals(self) -> None:
        """A4/I1.2: every heal follows an upstream success of that very pair or credential."""
        successes = {e.attempt_id: e for e in self.world.log if isinstance(e, AttemptSucceeded)}
        for e in self.world.log:
            if isinstance(e, CooldownCleared):
                cause = successes[e.attempt_id]
                assert cause.evidence is Evidence.UPSTREAM
                assert cause.credential_id == e.credential_id
                assert e.upstream_model in (None, cause.upstream_model)

    @invariant()
    def a5_a6_d3_reducer_matches_naive_model(self) -> None:
        """A5/A6/D3: the reducer's status of every scope equals the naive recomputation from the log."""
        now = self.world.now
        for stream in (*PAIRS, *CREDS):
            scope = self.world.state.pairs.get(stream) or self.world.state.creds.get(stream)
            assert status_at(scope, now) is naive_status(self.world.log, stream, now), stream

    @invariant()
    def predictions_match_the_naive_model_and_are_bounded(self) -> None:
        """A pair's predicted exhaustion is its latest uncleared prediction, within the hint bound."""
        for stream in PAIRS:
            scope = self.world.state.pairs.get(stream)
            predicted = scope.predicted_us if scope is not None else 0
            assert predicted == naive_predicted(self.world.log, stream), stream
        for e in self.world.log:
            if isinstance(e, ExhaustionPredicted):
                assert e.at_us < e.until_us <= e.at_us + self.world.policy.hints.max_us

    @invariant()
    def a7_each_request_ends_at_most_once(self) -> None:
        """A7: a request is exhausted or degraded at most once, and nothing is decided for it afterwards."""
        ended: set[str] = set()
        for e in self.world.log:
            if e.stream_id in ended:
                raise AssertionError(f"event after the end of {e.stream_id}: {e}")
            if isinstance(e, FallbackExhausted | Degraded):
                ended.add(e.stream_id)

    @invariant()
    def d2_replay_from_scratch_agrees(self) -> None:
        """D2: folding the whole log afresh gives the same scopes, versions and cursors."""
        again = fold(self.world.log)
        now = self.world.now
        assert again.cursors == self.world.state.cursors
        for table in ("pairs", "creds"):
            mine, theirs = getattr(self.world.state, table), getattr(again, table)
            assert mine.keys() == theirs.keys()
            for key, scope in mine.items():
                assert (scope.version, status_at(scope, now)) == (
                    theirs[key].version,
                    status_at(theirs[key], now),
                )
        counts: dict[str, int] = defaultdict(int)
        for e in self.world.log:
            counts[e.stream_id] += 1
            assert e.version == counts[e.stream_id]  # versions are stamped gap-free per stream


TestRoutingMachine = RoutingMachine.TestCase
