"""Exhaustive properties of the transition tables (every state x every event)."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

import attrs
import pytest

from routeledger.core.credentials import (
    TRANSITIONS,
    CredentialState,
    IllegalTransition,
    UnknownCredential,
    evolve,
    fold,
)
from routeledger.core.credentials.events import (
    CredentialAuthFailed,
    CredentialEvent,
    CredentialExpired,
    CredentialProvisioned,
    CredentialReprovisioned,
    CredentialRevoked,
    CredentialRotated,
    ModelResolutionFailed,
    ModelsResolved,
    OperatorKeyAdded,
    ResolutionFailure,
    RoleModel,
    TrialProvisioned,
    TrialProvisioningDecided,
    TrialProvisioningFailed,
)
from routeledger.core.credentials.lifecycle import TRIAL_TRANSITIONS, TrialState
from routeledger.core.events import REGISTRY

from .support import INSTALL, T0, meta

SUBJECT = "c"


def _sample(kind: type[CredentialEvent], version: int) -> CredentialEvent:
    """One well-formed event of ``kind`` about credential ``c``."""
    envelope = {"stream_id": f"cred:{SUBJECT}", "version": version, "at_us": T0}
    build: dict[type[CredentialEvent], Callable[[], CredentialEvent]] = {
        CredentialProvisioned: lambda: CredentialProvisioned(
            **envelope, credential_id=SUBJECT, installation_id=INSTALL, metadata=meta()
        ),
        TrialProvisioned: lambda: TrialProvisioned(
            **envelope, credential_id=SUBJECT, installation_id=INSTALL, metadata=meta()
        ),
        CredentialReprovisioned: lambda: CredentialReprovisioned(
            **envelope,
            credential_id=SUBJECT,
            installation_id=INSTALL,
            predecessor_id="p",
            metadata=meta(),
        ),
        ModelsResolved: lambda: ModelsResolved(
            **envelope,
            credential_id=SUBJECT,
            models=frozenset({"m"}),
            roles=(RoleModel(role="main", model="m"),),
        ),
        ModelResolutionFailed: lambda: ModelResolutionFailed(
            **envelope, credential_id=SUBJECT, reason=ResolutionFailure.UNREACHABLE
        ),
        CredentialAuthFailed: lambda: CredentialAuthFailed(
            **envelope, credential_id=SUBJECT, http_status=401
        ),
        CredentialRotated: lambda: CredentialRotated(
            **envelope, credential_id=SUBJECT, successor_id="s"
        ),
        CredentialExpired: lambda: CredentialExpired(
            **envelope, credential_id=SUBJECT, expires_at_us=T0
        ),
        CredentialRevoked: lambda: CredentialRevoked(**envelope, credential_id=SUBJECT),
    }
    return build[kind]()


#: Event classes that act on a credential (``cred:`` stream).
CRED_EVENTS = (
    CredentialProvisioned,
    TrialProvisioned,
    CredentialReprovisioned,
    ModelsResolved,
    ModelResolutionFailed,
    CredentialAuthFailed,
    CredentialRotated,
    CredentialExpired,
    CredentialRevoked,
)


def _setup() -> list[CredentialEvent]:
    """A predecessor ``p`` and a trial claim for ``c``, so every provisioning event can apply."""
    return [
        CredentialProvisioned(
            stream_id="cred:p",
            version=1,
            at_us=T0,
            credential_id="p",
            installation_id=INSTALL,
            metadata=meta(),
        ),
        TrialProvisioningDecided(
            stream_id=f"install:{INSTALL}",
            version=1,
            at_us=T0,
            installation_id=INSTALL,
            credential_id=SUBJECT,
        ),
    ]


def _path_to(target: CredentialState) -> list[CredentialEvent]:
    """The shortest event path from ``none`` to ``target`` through the table."""
    paths: dict[CredentialState, list[type[CredentialEvent]]] = {CredentialState.NONE: []}
    queue = deque([CredentialState.NONE])
    while queue:
        current = queue.popleft()
        for (source, kind), after in TRANSITIONS.items():
            if source is current and after not in paths:
                paths[after] = [*paths[current], kind]
                queue.append(after)
    return [_sample(kind, index + 1) for index, kind in enumerate(paths[target])]


def test_every_state_is_reachable_from_none() -> None:
    """Table: every lifecycle state is reachable, so every row of the table is live."""
    for state in CredentialState:
        folded = fold([*_setup(), *_path_to(state)])
        found = folded.credentials.get(SUBJECT)
        assert (found.state if found else CredentialState.NONE) is state


@pytest.mark.parametrize("state", list(CredentialState), ids=lambda s: s.value)
@pytest.mark.parametrize("kind", CRED_EVENTS, ids=lambda k: k.__name__)
def test_every_state_event_pair(state: CredentialState, kind: type[CredentialEvent]) -> None:
    """Table: legal pairs yield the tabled state; illegal ones name event, credential, state."""
    events = _path_to(state)
    folded = fold([*_setup(), *events])
    evt = _sample(kind, len(events) + 1)
    expected = TRANSITIONS.get((state, kind))
    if expected is None:
        with pytest.raises(IllegalTransition) as caught:
            evolve(folded, evt)
        assert caught.value.event_tag == kind.TAG
        assert caught.value.state is state
        assert caught.value.subject == f"credential {SUBJECT!r}"
        message = str(caught.value)
        assert kind.TAG in message
        assert repr(SUBJECT) in message
        assert state.name in message
    else:
        assert evolve(folded, evt).credentials[SUBJECT].state is expected


@pytest.mark.parametrize("trial", list(TrialState), ids=lambda s: s.value)
@pytest.mark.parametrize(
    "kind", [TrialProvisioningDecided, TrialProvisioningFailed, TrialProvisioned, OperatorKeyAdded]
)
def test_every_trial_state_event_pair(trial: TrialState, kind: type[CredentialEvent]) -> None:
    """Table, I0: one claim, one outcome, no claim after an operator key; errors name it all."""
    install = f"install:{INSTALL}"
    claim = TrialProvisioningDecided(
        stream_id=install, version=1, at_us=T0, installation_id=INSTALL, credential_id=SUBJECT
    )
    added = OperatorKeyAdded(
        stream_id=install, version=1, at_us=T0, installation_id=INSTALL, credential_id="op"
    )
    prefix: dict[TrialState, list[CredentialEvent]] = {
        TrialState.NOT_CLAIMED: [],
        TrialState.FORGONE: [added],
        TrialState.CLAIMED: [claim],
        TrialState.PROVISIONED: [claim, _sample(TrialProvisioned, 1)],
        TrialState.FAILED: [
            claim,
            TrialProvisioningFailed(
                stream_id=install,
                version=2,
                at_us=T0,
                installation_id=INSTALL,
                credential_id=SUBJECT,
                http_status=None,
            ),
        ],
    }
    folded = fold(prefix[trial])
    assert folded.installations.get(INSTALL) is None or (
        folded.installations[INSTALL].trial is trial
    )
    if kind is TrialProvisioned:
        evt: CredentialEvent = TrialProvisioned(
            stream_id="cred:other",
            version=1,
            at_us=T0,
            credential_id="other",
            installation_id=INSTALL,
            metadata=meta(),
        )
    elif kind is TrialProvisioningDecided:
        evt = attrs.evolve(claim, version=9)
    elif kind is OperatorKeyAdded:
        evt = attrs.evolve(added, version=9)
    else:
        evt = TrialProvisioningFailed(
            stream_id=install,
            version=9,
            at_us=T0,
            installation_id=INSTALL,
            credential_id=SUBJECT,
            http_status=500,
        )
    expected = TRIAL_TRANSITIONS.get((trial, kind))
    if expected is None:
        with pytest.raises(IllegalTransition) as caught:
            evolve(folded, evt)
        assert caught.value.subject == f"installation {INSTALL!r}"
        assert trial.name in str(caught.value)
        assert kind.TAG in str(caught.value)
    else:
        assert evolve(folded, evt).installations[INSTALL].trial is expected


def test_a_replacement_of_an_unknown_credential_fails_loudly() -> None:
    """Table: a successor of a never-provisioned key is an UnknownCredential error."""
    with pytest.raises(UnknownCredential, match="'p'"):
        fold([_sample(CredentialReprovisioned, 1)])


def test_every_registered_credential_event_is_in_a_table() -> None:
    """Table: no credential event class is left out of both transition tables."""
    tabled = {kind for _, kind in TRANSITIONS} | {kind for _, kind in TRIAL_TRANSITIONS}
    registered = {cls for cls in REGISTRY if issubclass(cls, CredentialEvent)}
    assert registered == tabled
