"""F5 figures: classify one provider response, scrub a 2 KB message.

Figures: classify.response.us (one OpenAI 429 with a JSON error body, Retry-After
and reset headers -> Observation; target <= 20 µs), scrub.2kb.us (a 2 KB provider
error message holding a URL key, a Bearer token and ordinary fields, through a
scrubber built from a store of 3 secrets; target <= 30 µs).
"""

from __future__ import annotations

import sys
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import figure, per_call_us
from _floors import Floors

from routeledger.adapters.providers.observe import observe_response
from routeledger.adapters.providers.scrub import Scrubber
from routeledger.core.credentials.secrets import InMemorySecretStore

NOW_US = 1_767_225_600_000_000

RESPONSE = httpx.Response(
    429,
    headers={
        "content-type": "application/json",
        "retry-after": "20",
        "x-ratelimit-reset-requests": "6m0s",
        "x-ratelimit-reset-tokens": "1.5s",
        "x-request-id": "req_8c1f2b",
    },
    json={
        "error": {
            "message": "Rate limit reached for gpt-4o in organization org-abc on tokens per min "
            "(TPM): Limit 30000, Used 29000, Requested 2000. Please try again in 2s. Visit "
            "https://platform.openai.com/account/rate-limits to learn more.",
            "type": "tokens",
            "param": None,
            "code": "rate_limit_exceeded",
        }
    },
    request=httpx.Request("POST", "https://api.openai.com/v1/chat/completions"),
)

STORE = InMemorySecretStore(
    {
        "openai-prod": "sk-proj-" + "a1B2c3D4" * 6,
        "gemini-main": "AIzaSyZZZ1234567890abcdefghijklmnopq",
        "gateway": "gw-token-0123456789abcdef",
    }
)
SCRUBBER = Scrubber.from_store(STORE)
_PARAGRAPH = (
    "upstream error: Rate limit reached for gpt-4o in organization org-abc on tokens per min "
    "(TPM): Limit 30000, Used 29000, Requested 2000. max_tokens=1024 "
    "input_cost_per_token=0.0000025 Please try again in 2s. "
)
MESSAGE = (
    (_PARAGRAPH * 14)[:1900]
    + " GET https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash"
    + ":generateContent?key=AIzaSyZZZ1234567890abcdefghijklmnopq&alt=sse"
    + " headers={'Authorization': 'Bearer gw-token-0123456789abcdef'}"
)[:2048]


def main() -> None:
    assert observe_response(RESPONSE, now_us=NOW_US).status == 429
    assert "AIzaSyZZZ" not in SCRUBBER(MESSAGE) and len(MESSAGE) == 2048
    floors = Floors("attrs_event_us")
    classify = per_call_us(lambda: observe_response(RESPONSE, now_us=NOW_US), calls=5_000)
    figure("classify.response.us", classify, "us")
    floors.ratio("classify.response.us", classify, "attrs_event_us")
    scrub = per_call_us(lambda: SCRUBBER(MESSAGE), calls=5_000)
    figure("scrub.2kb.us", scrub, "us")
    floors.ratio("scrub.2kb.us", scrub, "attrs_event_us")
    floors.finish()


if __name__ == "__main__":
    main()
