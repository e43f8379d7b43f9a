"""The credential-usability seam used by routing."""

from __future__ import annotations

from routeledger.core.usability import CredentialUsability, UnusableReason, model_problem


def view(**changes: object) -> CredentialUsability:
    base: dict[str, object] = {
        "credential_id": "c1",
        "unusable": None,
        "resolved_models": frozenset({"gpt-4o"}),
        "validates_model_names": True,
    }
    base.update(changes)
    return CredentialUsability(**base)  # type: ignore[arg-type]


def test_only_resolved_names_are_allowed_where_the_provider_validates_names() -> None:
    """I0: a validating provider only accepts resolved names; unresolved ones are refused."""
    assert model_problem(view(), "gpt-4o") is None
    assert model_problem(view(), "gpt-4o-2024-05-13") is UnusableReason.MODEL_NOT_RESOLVED
    assert model_problem(view(resolved_models=None), "gpt-4o") is UnusableReason.MODELS_UNRESOLVED


def test_an_unusable_credential_refuses_every_model() -> None:
    """A credential with a reason refuses every name, whatever was resolved."""
    blocked = view(unusable=UnusableReason.AUTH_FAILED)
    assert model_problem(blocked, "gpt-4o") is UnusableReason.AUTH_FAILED


def test_non_validating_providers_accept_any_name() -> None:
    """Without name validation an unresolved name may still be tried."""
    loose = view(validates_model_names=False, resolved_models=None)
    assert model_problem(loose, "anything") is None
