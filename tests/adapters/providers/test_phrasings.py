"""Model-support phrasings gathered from providers and gateways (docs/errors.md cites each).

A property: the same meaning in any case, punctuation, quoting of the model
name, surrounding text and status classifies alike.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from routeledger.adapters.providers.observe import DEFAULT_CLASSIFIER, Provider, observe_response
from routeledger.core.routing.failures import FailureClass

from ._helpers import NOW_US, expect, response

F = FailureClass

#: Verbatim messages seen from upstreams, with the status they came with.
SEEN = [
    # OpenAI (and the fake provider, modelled on it): a model the method does not take.
    (400, "The model `gpt-4o-audio` is not supported with this method.", F.MODEL_NOT_SUPPORTED),
    # OpenAI: a completions model on /v1/chat/completions (run-llama/llama_index#1332).
    (
        404,
        "This is not a chat model and thus not supported in the v1/chat/completions endpoint. "
        "Did you mean to use v1/completions?",
        F.MODEL_NOT_SUPPORTED,
    ),
    # The phrasing issue [G7] reported as terminal.
    (400, "the requested model is unsupported", F.MODEL_NOT_SUPPORTED),
    # OpenRouter: no provider serves this model / this request (lastmile-ai/mcp-agent#237).
    (404, "No endpoints found for deepseek/deepseek-chat-v3.1:free.", F.MODEL_NOT_SUPPORTED),
    (404, "No endpoints found that support tool use.", F.MODEL_NOT_SUPPORTED),
    # Azure OpenAI: OperationNotSupported.
    (
        400,
        "The chatCompletion operation does not work with the specified model, gpt-35-turbo-"
        "instruct. Please choose different model and try again.",
        F.MODEL_NOT_SUPPORTED,
    ),
    # Groq: code model_decommissioned (crewAIInc/crewAI#1976).
    (
        400,
        "The model `llama-3.1-70b-versatile` has been decommissioned and is no longer supported.",
        F.MODEL_NOT_FOUND,
    ),
    # Azure (DeploymentNotFound) and Bedrock, as litellm 1.110 maps them to NotFoundError
    # (litellm/litellm_core_utils/exception_mapping_utils.py).
    (404, "The API deployment for this resource does not exist.", F.MODEL_NOT_FOUND),
    (400, "The provided model identifier is invalid.", F.MODEL_NOT_FOUND),
    # Mistral (type invalid_model) and DeepSeek.
    (400, "Invalid model: mistral-huge-9", F.MODEL_NOT_FOUND),
    (400, "Model Not Exist", F.MODEL_NOT_FOUND),
    # A parameter the model does not take is the caller's request, not the pair.
    (400, "Unsupported parameter: 'stop' is not supported with this model.", F.INVALID_REQUEST),
]


@pytest.mark.parametrize(("status", "message", "failure"), SEEN)
def test_seen_phrasings(status: int, message: str, failure: FailureClass) -> None:
    """Each upstream's verbatim wording maps to its class (400s fall back when about the pair)."""
    answer = response(status, {"error": {"message": message, "type": "invalid_request_error"}})
    expect(observe_response(answer, now_us=NOW_US), failure, status=status)


NOT_SUPPORTED = [
    "The requested model {m} is unsupported",
    "The model {m} is not supported with this method",
    "model {m} is not supported",
    "Model {m} does not support this request",
    "This model ({m}) is not available for your account",
    "model_not_supported: {m}",
    "No endpoints found for {m}",
]
NOT_FOUND = [
    "The model {m} does not exist or you do not have access to it",
    "model {m} not found, try pulling it first",
    "Invalid model name passed in model={m}",
    "The model {m} has been decommissioned and is no longer supported",
    "Unknown model: {m}",
]
QUOTES = ["", "`", "'", '"']
CASES = [str, str.lower, str.upper, str.title, str.swapcase]
PREFIXES = ["", "Error: ", "litellm.BadRequestError: OpenAIException - ", "upstream said: "]
SUFFIXES = ["", ".", "!", " (request id req_123)", ". Please choose another one."]
models = st.from_regex(
    r"[a-z]{2,6}(-[0-9]{1,3}(\.[0-9])?)?(-[a-z0-9]{2,8})?(:free)?", fullmatch=True
)


@given(
    family=st.sampled_from(
        [(NOT_SUPPORTED, F.MODEL_NOT_SUPPORTED), (NOT_FOUND, F.MODEL_NOT_FOUND)]
    ),
    index=st.integers(0, 6),
    model=models,
    quote=st.sampled_from(QUOTES),
    case=st.sampled_from(CASES),
    prefix=st.sampled_from(PREFIXES),
    suffix=st.sampled_from(SUFFIXES),
    status=st.sampled_from([400, 404, 422, None]),
    provider=st.sampled_from([*Provider, None]),
)
def test_the_same_meaning_classifies_alike(
    family: tuple[list[str], FailureClass],
    index: int,
    model: str,
    quote: str,
    case: object,
    prefix: str,
    suffix: str,
    status: int | None,
    provider: Provider | None,
) -> None:
    """Case, punctuation, quoting, surrounding text, status and dialect never change the class."""
    templates, failure = family
    template = templates[index % len(templates)]
    text = prefix + template.format(m=f"{quote}{model}{quote}") + suffix
    assert callable(case)
    phrased = case(text)
    assert DEFAULT_CLASSIFIER.classify(phrased, provider=provider, status=status) is failure
