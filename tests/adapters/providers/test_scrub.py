"""The scrubber, E1's one choke point: known values, patterns, idempotence, ordinary fields survive."""

from __future__ import annotations

import json
import traceback
from collections.abc import Callable
from urllib.parse import quote, quote_plus

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from routeledger.adapters.providers.scrub import DEFAULT_SCRUBBER, REDACTED, Scrubber, scrub
from routeledger.core.credentials.secrets import InMemorySecretStore

WINDOW = 8


def _chained(secret: str) -> str:
    """Traceback text of an exception raised from another whose message holds the secret."""
    try:
        try:
            raise ConnectionError(f"upstream rejected credential {secret}")
        except ConnectionError as inner:
            raise RuntimeError(f"attempt failed: {inner}") from inner
    except RuntimeError as outer:
        return "".join(traceback.format_exception(outer))


#: Templates that embed a secret the way gateways leak them (E1).
TEMPLATES: dict[str, Callable[[str], str]] = {
    "url-query": lambda s: (
        f"GET https://generativelanguage.googleapis.com/v1beta/models?key={quote(s, safe='')}&alt=sse failed"
    ),
    "url-query-plus": lambda s: (
        f"POST https://api.example.test/v1/chat?api_key={quote_plus(s)} -> 401"
    ),
    "header": lambda s: f"request headers: x-api-key: {s}\ncontent-type: application/json",
    "bearer": lambda s: f"Authorization: Bearer {s}",
    "json": lambda s: json.dumps({"model": "gpt-4o", "api_key": s, "max_tokens": 100}),
    "dict-repr": lambda s: repr(
        {"headers": {"Authorization": f"Bearer {s}"}, "input_cost_per_token": 1e-05}
    ),
    "chained-exception": _chained,
}

_SECRET_CHARS = st.characters(min_codepoint=33, max_codepoint=126)
KNOWN_SECRETS = st.text(_SECRET_CHARS, min_size=12, max_size=64)
_ALNUM = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
_B64URL = _ALNUM + "-_"
UNKNOWN_SHAPED = st.one_of(
    st.text(_B64URL, min_size=20, max_size=48).map(lambda t: "sk-proj-" + t),
    st.text(_B64URL, min_size=20, max_size=48).map(lambda t: "sk-ant-api03-" + t),
    st.text(_B64URL, min_size=35, max_size=35).map(lambda t: "AIza" + t),
    st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", min_size=16, max_size=16).map(lambda t: "AKIA" + t),
    st.tuples(*(st.text(_B64URL, min_size=8, max_size=40) for _ in range(3))).map(
        lambda p: f"eyJ{p[0]}.{p[1]}.{p[2]}"
    ),
)
UNKNOWN_PLAIN = st.text(_ALNUM + "-_.", min_size=12, max_size=40)
FILLER = st.lists(
    st.sampled_from(
        ["upstream", "error:", "max_tokens=512", "(HTTP 401)", "retry", "model", "—", "\n"]
    ),
    max_size=6,
).map(" ".join)


def _in_template(secret: str, template: str, before: str = "") -> bool:
    """Whether a piece of ``secret`` is ordinary text of the template itself (then no leak is provable)."""
    baseline = f"{before} {TEMPLATES[template]('•')}"
    return any(secret[i : i + WINDOW] in baseline for i in range(len(secret) - WINDOW + 1))


def _leaks(secret: str, output: str) -> list[str]:
    return [
        secret[i : i + WINDOW]
        for i in range(len(secret) - WINDOW + 1)
        if secret[i : i + WINDOW] in output
    ]


@given(
    secret=KNOWN_SECRETS, template=st.sampled_from(sorted(TEMPLATES)), before=FILLER, after=FILLER
)
def test_known_secret_never_survives(secret: str, template: str, before: str, after: str) -> None:
    """A store-known secret embedded through any template leaves no 8-char substring behind (E1)."""
    baseline = f"{before} {TEMPLATES[template]('•')} {after}"
    assume(not any(secret[i : i + WINDOW] in baseline for i in range(len(secret) - WINDOW + 1)))
    text = f"{before} {TEMPLATES[template](secret)} {after}"
    assert _leaks(secret, Scrubber([secret])(text)) == []


@given(secret=UNKNOWN_SHAPED, template=st.sampled_from(sorted(TEMPLATES)), before=FILLER)
def test_shaped_secret_never_survives_without_the_store(
    secret: str, template: str, before: str
) -> None:
    """A vendor-shaped key nobody registered is caught by its pattern in every template (E1)."""
    assume(not _in_template(secret, template, before))
    assert _leaks(secret, scrub(f"{before} {TEMPLATES[template](secret)}")) == []


@given(secret=UNKNOWN_PLAIN, template=st.sampled_from(sorted(TEMPLATES)))
def test_named_secret_never_survives_without_the_store(secret: str, template: str) -> None:
    """A plain token in a key=/header/Bearer/JSON/repr slot is caught by the slot's name (E1)."""
    assume(template != "chained-exception")  # a bare token in prose has no name to go by
    assume(not _in_template(secret, template))
    assert _leaks(secret, scrub(TEMPLATES[template](secret))) == []


@given(text=st.text(max_size=300), secret=KNOWN_SECRETS)
def test_idempotent_on_arbitrary_text(text: str, secret: str) -> None:
    """scrub(scrub(x)) == scrub(x), with and without known secrets (E1)."""
    scrubber = Scrubber([secret])
    mixed = text + secret + text[: len(text) // 2]
    once = scrubber(mixed)
    assert scrubber(once) == once
    assert scrub(scrub(text)) == scrub(text)


@given(secret=st.one_of(UNKNOWN_SHAPED, UNKNOWN_PLAIN), template=st.sampled_from(sorted(TEMPLATES)))
def test_idempotent_on_templates(secret: str, template: str) -> None:
    """Scrubbing a scrubbed leak changes nothing (E1)."""
    once = scrub(TEMPLATES[template](secret))
    assert scrub(once) == once


ORDINARY_FIELDS = [
    "max_tokens",
    "max_completion_tokens",
    "input_cost_per_token",
    "output_cost_per_token",
    "total_tokens",
    "token_count",
    "tokens_per_minute",
    "keyboard",
    "monkey",
    "secretary",
]


@given(
    values=st.lists(st.tuples(st.sampled_from(ORDINARY_FIELDS), st.integers(0, 10**9)), max_size=8)
)
def test_ordinary_fields_survive(values: list[tuple[str, int]]) -> None:
    """Config-like text made of ordinary field names is returned unchanged (E1 without collateral)."""
    text = json.dumps(dict(values)) + " " + "&".join(f"{name}={value}" for name, value in values)
    assert scrub(text) == text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            '{"max_tokens": 1024, "input_cost_per_token": 3e-06}',
            '{"max_tokens": 1024, "input_cost_per_token": 3e-06}',
        ),
        ("Authorization: Bearer abc.def-ghijklmn", f"Authorization: Bearer {REDACTED}"),
        ("authorization=rawkeyvalue1234", f"authorization={REDACTED}"),
        ("bearer tokenvalue12345 used", f"bearer {REDACTED} used"),
        (
            '"Authorization": "Basic YWxhZGRpbjpvcGVuc2VzYW1l"',
            f'"Authorization": "Basic {REDACTED}"',
        ),
        ("sent Basic dXNlcjpwYXNz1 header", f"sent Basic {REDACTED} header"),
        (
            "Basic tier model; basic authentication required",
            "Basic tier model; basic authentication required",
        ),
        ("postgresql://user:hunter22@db:5432/x", f"postgresql://{REDACTED}@db:5432/x"),
        ("https://alice@host/x", f"https://{REDACTED}@host/x"),
        ("AKIAIOSFODNN7EXAMPLE is AWS", f"{REDACTED} is AWS"),
        ("XAKIAIOSFODNN7EXAMPLE", "XAKIAIOSFODNN7EXAMPLE"),
        ("jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2ln end", f"jwt {REDACTED} end"),
        ("task-abcdefghijkl sk-abcdefghijk", f"task-abcdefghijkl {REDACTED}"),
        (
            "pem -----BEGIN RSA PRIVATE KEY-----\nMIIabc\n-----END RSA PRIVATE KEY----- after",
            f"pem {REDACTED} after",
        ),
        ("cut -----BEGIN PRIVATE KEY-----\nMIIabc", f"cut {REDACTED}"),
        (
            "password=hunter2 passwd: x client_secret='abc'",
            f"password={REDACTED} passwd: {REDACTED} client_secret='{REDACTED}'",
        ),
        ("aws_secret_access_key=wJalrXUtnFEMI", f"aws_secret_access_key={REDACTED}"),
        ("X-Goog-Api-Key: zzzzzzzzzzzz", f"X-Goog-Api-Key: {REDACTED}"),
        ("key", "key"),
        ("the api_key is missing", "the api_key is missing"),
        ("İİ token=abc", f"İİ token={REDACTED}"),
        ("İ API_KEY=abcdef Bearer abcdefghij", f"İ API_KEY={REDACTED} Bearer {REDACTED}"),
    ],
)
def test_pattern_examples(text: str, expected: str) -> None:
    """Each pattern replaces the whole token and keeps only its label; look-alikes are untouched (E1)."""
    assert scrub(text) == expected


def test_partial_echo_of_a_known_key_is_redacted_whole() -> None:
    """A provider echoing a known key's prefix or suffix (cut or masked) leaves no 8-char piece (E1)."""
    key = "gw-0123456789abcdefghijKLMNOP"
    scrubber = Scrubber([key])
    for text in (f"key {key[:14]}… was rejected", f"ends with ...{key[-10:]}", f"x{key}y"):
        assert _leaks(key, scrubber(text)) == []


def test_scrubber_from_store_and_with_secrets() -> None:
    """A scrubber built from the secret store redacts its values; with_secrets adds more; repr leaks nothing (E1)."""
    store = InMemorySecretStore(
        {"cred-a": "store-secret-0001", "cred-b": "store secret with spaces"}
    )
    scrubber = Scrubber.from_store(store)
    text = "a=store-secret-0001 b=store%20secret%20with%20spaces c='store secret with spaces' extra-secret-0002"
    out = scrubber(text)
    assert "store-secret-0001" not in out and "store secret" not in out and "store%20" not in out
    assert "extra-secret-0002" in out
    assert "extra-secret-0002" not in scrubber.with_secrets(["extra-secret-0002"])(text)
    assert "store" not in repr(scrubber) and repr(scrubber) == "Scrubber(known_secrets=2)"


def test_short_and_marker_like_secrets_are_not_replaced() -> None:
    """Values shorter than 8 characters or inside the marker are not used for exact replacement."""
    scrubber = Scrubber(["abc", "REDACTED"])
    assert scrubber("abc abc REDACTED") == "abc abc REDACTED"
    assert scrub("plain text", known_secrets=[]) == "plain text"
    assert DEFAULT_SCRUBBER("plain text") == "plain text"


def test_overlapping_secrets_reach_a_fixed_point() -> None:
    """Secrets overlapping the marker and each other still end in an idempotent result (E1)."""
    scrubber = Scrubber(["a[REDACTED]", "xxxxxxxx[REDAC"])
    once = scrubber("aa[REDACTED] xxxxxxxx[REDACTED]")
    assert scrubber(once) == once
