"""The one choke point for secrets (E1): every renderer, log line and event detail goes through here.

Rules:

* Exact values first: every secret the store holds (:meth:`SecretReader.secret_values`)
  is replaced wherever it appears, in its raw form and in the forms it takes once
  embedded somewhere: URL-encoded (``quote``/``quote_plus``), JSON-escaped and
  ``repr``-escaped. A token run that starts or ends with the first or last 8
  characters of such a form (an echo cut short, a key shown "partially") is
  replaced whole. Values shorter than :data:`SECRET_SCRUB_LENGTH_MIN` are not
  replaced (they would redact ordinary words): E1 is about substrings of 8+.
* Then patterns for secrets nobody told us about: OpenAI/Anthropic ``sk-…``,
  Google ``AIza…``, ``Bearer …``/``Basic …``/``Authorization: …``,
  ``api_key=``/``key=``/``token=`` parameters and ``x-api-key:``-style headers
  (also as JSON members and dict reprs), AWS access key ids, JWTs, PEM private
  keys and ``user:password@`` in URLs.
* The whole token is replaced by :data:`REDACTED`: never "sk-…abcd", never a
  fixed prefix revealed. A parameter or scheme name (``api_key=``, ``Bearer``)
  is kept so the reader knows *what* was there.
* Idempotent: ``scrub(scrub(x)) == scrub(x)``. The marker matches no pattern
  (its ``[`` is outside every token class); when a known form is present again
  after a pass, the pass is repeated (at most :data:`SCRUB_PASSES_MAX`).

Performance: patterns are compiled once, at import, and each is tried only
where one of its anchor literals occurs (``str.find``, then ``pattern.match``
at that position): Python's ``re`` needs tens of µs to scan 2 KB with a
pattern that does not start with a plain literal, a ``find`` well under one.
Ordinary field names (``max_tokens``, ``input_cost_per_token``) survive: a
secret parameter name must be one of :data:`_SECRET_NAMES`, whole.

Limitation: a fragment from the *middle* of a known secret (neither its first
nor its last 8 characters) is only caught when a pattern catches it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Final
from urllib.parse import quote, quote_plus

from routeledger.core.credentials.secrets import SecretReader

__all__ = [
    "DEFAULT_SCRUBBER",
    "REDACTED",
    "SCRUB_PASSES_MAX",
    "SECRET_SCRUB_LENGTH_MIN",
    "Scrubber",
    "scrub",
]

#: What every secret becomes.
REDACTED: Final = "[REDACTED]"
#: Shortest exact secret value replaced. Why 8: E1 forbids substrings of 8+
#: characters; replacing shorter values would redact ordinary words.
SECRET_SCRUB_LENGTH_MIN: Final = 8
#: Passes until a fixed point. Why 4: one pass suffices unless exact secrets
#: overlap the marker or each other; such pathological overlaps settle in three.
SCRUB_PASSES_MAX: Final = 4

# A token character: anything that is not a separator in URLs, headers, JSON or
# reprs. "[" and "]" are excluded so that REDACTED never matches again.
_TOK: Final = r"[^\s\"'`<>,;&|(){}\[\]\\]"

# (anchors, folded, pattern, replacement): the pattern is matched at every
# occurrence of an anchor (in the lower-cased text when ``folded``).
_Rule = tuple[tuple[str, ...], bool, re.Pattern[str], str]

_RULES: Final[tuple[_Rule, ...]] = (
    # PEM private keys, possibly cut off (then up to the end of the text).
    (
        ("-----BEGIN",),
        False,
        re.compile(
            r"-----BEGIN[A-Z ]{0,40}PRIVATE KEY-----.*?(?:-----END[A-Z ]{0,40}PRIVATE KEY-----|\Z)",
            re.DOTALL,
        ),
        REDACTED,
    ),
    # Credentials inside URLs: scheme://user:password@host.
    (("://",), False, re.compile(r"://[^\s/?#@\[\]\"'<>]+@"), "://" + REDACTED + "@"),
    # JWTs (three base64url segments; the header always starts with eyJ).
    (
        ("eyJ",),
        False,
        re.compile(
            r"(?<![A-Za-z0-9_-])eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}(?:\.[A-Za-z0-9_-]*)?"
        ),
        REDACTED,
    ),
    # OpenAI / Anthropic / OpenRouter / DeepSeek keys (sk-, sk-proj-, sk-ant-, sk-or-...).
    (("sk-",), False, re.compile(r"(?<![A-Za-z0-9])sk-" + _TOK + r"{8,}"), REDACTED),
    # Google API keys.
    (("AIza",), False, re.compile(r"AIza" + _TOK + r"{8,}"), REDACTED),
    # AWS access key ids.
    (
        ("AKIA", "ASIA"),
        False,
        re.compile(r"(?<![A-Z0-9])[A-Z]{4}[A-Z0-9]{16}(?![A-Z0-9])"),
        REDACTED,
    ),
    # Authorization headers, whatever the scheme.
    (
        ("authorization",),
        True,
        re.compile(
            r"(?i)(?<![a-z0-9_-])(authorization[\"']?\s*+[:=]\s*+[\"']?\s*+"
            r"(?:(?:bearer|basic|token)\s++)?+)" + _TOK + "+"
        ),
        r"\1" + REDACTED,
    ),
    # Bearer tokens anywhere; Basic credentials (base64 with a digit or +/=).
    (
        ("bearer",),
        True,
        re.compile(r"(?i)(?<![a-z0-9_-])(bearer\s++)" + _TOK + r"{8,}"),
        r"\1" + REDACTED,
    ),
    (
        ("basic",),
        True,
        re.compile(
            r"(?i)(?<![a-z0-9_-])(basic\s++)(?=[A-Za-z0-9+/]*[0-9+/=])[A-Za-z0-9+/]{8,}={0,2}(?!"
            + _TOK
            + ")"
        ),
        r"\1" + REDACTED,
    ),
)


def _spellings(*parts: tuple[str, ...]) -> frozenset[str]:
    names = {""}
    for choices in parts:
        names = {name + choice for name in names for choice in choices}
    return frozenset(names)


_SEP = ("_", "-", "")
#: Parameter and header names whose value is a secret (matched whole, case-folded).
_SECRET_NAMES: Final = (
    _spellings(("", "x-", "x-goog-", "goog-"), ("api",), _SEP, ("key",))
    | _spellings(("access", "refresh", "id", "auth", "x-auth"), _SEP, ("token",))
    | _spellings(("", "aws_", "aws-"), ("secret",), ("_", "-"), ("access",), ("_", "-"), ("key",))
    | _spellings(("client",), _SEP, ("secret",))
    | frozenset({"key", "token", "secret", "password", "passwd", "pwd", "signature"})
)
#: Every secret name ends with one of these: found with ``str.find``, then checked.
_SECRET_NAME_ENDINGS: Final = ("key", "token", "secret", "password", "passwd", "pwd", "signature")


def _name_pattern(ending: str) -> re.Pattern[str]:
    """``ending`` (literal first: ``re`` searches it like ``str.find``) ending a whole secret name.

    Whole name: each spelling is checked by its own fixed-width look-behinds
    (the name, not preceded by a name character); then a separator must follow.
    """
    spellings = sorted((n for n in _SECRET_NAMES if n.endswith(ending)), key=lambda n: (-len(n), n))
    names = "|".join(f"(?<={re.escape(n)})(?<![a-z0-9_-]{re.escape(n)})" for n in spellings)
    return re.compile(re.escape(ending) + f"(?:{names})" + r"(?![a-z0-9_-])(?=[\"']?\s*+[:=])")


#: Per ending: where it ends a whole secret name followed by a separator.
_NAME_BEFORE_SEPARATOR: Final = {ending: _name_pattern(ending) for ending in _SECRET_NAME_ENDINGS}
#: After a secret name: the separator, then the value.
_SEPARATED_VALUE: Final = re.compile(r"([\"']?\s*+[:=]\s*+[\"']?\s*+)(" + _TOK + r"+)")


_ASCII_LOWER: Final = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def _folded(text: str) -> str:
    """``text`` lower-cased, position for position (ASCII-only folding when Unicode would move them)."""
    low = text.lower()
    return low if len(low) == len(text) else text.translate(_ASCII_LOWER)


def _replace_spans(text: str, spans: list[tuple[int, int, str]]) -> str:
    """``text`` with each ``(begin, end, replacement)`` applied; of overlapping ones the earliest wins."""
    parts: list[str] = []
    cursor = 0
    for begin, end, replacement in sorted(spans):
        if begin >= cursor:
            parts.append(text[cursor:begin])
            parts.append(replacement)
            cursor = end
    parts.append(text[cursor:])
    return "".join(parts)


def _apply_rule(text: str, low: str, rule: _Rule) -> str:
    anchors, folded, pattern, replacement = rule
    haystack = low if folded else text
    spans: list[tuple[int, int, str]] = []
    for anchor in anchors:
        at = haystack.find(anchor)
        while at >= 0:
            match = pattern.match(text, at)
            if match is not None:
                # Match.expand parses its template on every call: only when needed.
                text_out = match.expand(replacement) if "\\" in replacement else replacement
                spans.append((at, match.end(), text_out))
            at = haystack.find(anchor, at + 1)
    return _replace_spans(text, spans) if spans else text


def _redact_named_values(text: str, low: str) -> str:
    """Replace the value of every ``name=value`` / ``"name": "value"`` / ``name: value``."""
    spans: list[tuple[int, int, str]] = []
    for pattern in _NAME_BEFORE_SEPARATOR.values():
        for found in pattern.finditer(low):
            value = _SEPARATED_VALUE.match(text, found.end())
            if value is not None:
                spans.append((value.start(2), value.end(2), REDACTED))
    return _replace_spans(text, spans) if spans else text


def _forms(secret: str) -> set[str]:
    """The forms a secret takes once embedded in URLs, JSON or reprs."""
    forms = {
        secret,
        quote(secret, safe=""),
        quote(secret),
        quote_plus(secret),
        json.dumps(secret)[1:-1],
        json.dumps(secret, ensure_ascii=False)[1:-1],
        repr(secret)[1:-1],
    }
    return {form for form in forms if len(form) >= SECRET_SCRUB_LENGTH_MIN and form not in REDACTED}


def _may_overlap_marker(piece: str) -> bool:
    """Whether ``piece`` could occur across an inserted :data:`REDACTED` (it contains, starts
    with a suffix of, or ends with a prefix of the marker)."""
    return REDACTED in piece or any(
        piece.startswith(REDACTED[-k:]) or piece.endswith(REDACTED[:k])
        for k in range(1, len(REDACTED))
    )


def _by_length(forms: Iterable[str]) -> tuple[str, ...]:
    # Longest first: a secret containing another is replaced whole.
    return tuple(sorted(forms, key=lambda form: (-len(form), form)))


class Scrubber:
    """Redacts known secret values and secret-looking tokens; immutable once built."""

    __slots__ = ("_ends", "_exact", "_fragile", "_secrets")

    def __init__(self, known_secrets: Iterable[str] = ()) -> None:
        self._secrets = frozenset(known_secrets)
        forms: set[str] = set()
        for secret in self._secrets:
            forms |= _forms(secret)
        self._exact = _by_length(forms)
        ends: dict[str, re.Pattern[str]] = {}
        for form in forms:
            for end in (form[:SECRET_SCRUB_LENGTH_MIN], form[-SECRET_SCRUB_LENGTH_MIN:]):
                if end not in REDACTED:
                    ends[end] = re.compile(_TOK + "*" + re.escape(end) + _TOK + "*")
        self._ends = tuple(sorted(ends.items()))
        # Every text change inserts REDACTED, so a form can only reappear after a
        # pass by overlapping an inserted marker: only such forms need rechecking.
        self._fragile = tuple(
            piece for piece in (*self._exact, *ends) if _may_overlap_marker(piece)
        )

    @classmethod
    def from_store(cls, store: SecretReader) -> Scrubber:
        """A scrubber for every secret value ``store`` holds now (rebuild after rotations)."""
        return cls(store.secret_values())

    def with_secrets(self, known_secrets: Iterable[str]) -> Scrubber:
        """A new scrubber that also redacts ``known_secrets``."""
        return Scrubber(self._secrets | frozenset(known_secrets))

    def _once(self, text: str) -> tuple[str, bool]:
        """One pass; also says whether an exact secret or a fragment was replaced."""
        original = text
        for form in self._exact:
            if form in text:
                text = text.replace(form, REDACTED)
        for end, pattern in self._ends:
            if end in text:
                text = pattern.sub(REDACTED, text)
        exact_hit = text is not original
        low = _folded(text)
        for rule in _RULES:
            haystack = low if rule[1] else text
            for anchor in rule[0]:  # ``in`` first: the common case is no anchor at all
                if anchor in haystack:
                    scrubbed = _apply_rule(text, low, rule)
                    if scrubbed is not text:
                        text, low = scrubbed, _folded(scrubbed)
                    break
        return _redact_named_values(text, low), exact_hit

    def __call__(self, text: str) -> str:
        """``text`` with every secret replaced by :data:`REDACTED` (idempotent).

        One pass is a fixed point unless an exact secret was replaced and a
        known form is present again (a replacement completed another secret's
        form): only then is a pass repeated.
        """
        text, exact_hit = self._once(text)
        passes = 1
        # Defensive bound: a randomised search found no input needing a second
        # pass (the fragment rule already catches forms rebuilt by a replacement).
        while exact_hit and passes < SCRUB_PASSES_MAX and self._remains(text):  # pragma: no branch
            text, exact_hit = self._once(text)  # pragma: no cover
            passes += 1  # pragma: no cover
        return text

    def _remains(self, text: str) -> bool:
        """Whether a form or fragment that a replacement could have rebuilt is present."""
        return any(piece in text for piece in self._fragile)

    def __repr__(self) -> str:
        # Never print the values.
        return f"Scrubber(known_secrets={len(self._secrets)})"


#: Patterns only: for text from code paths that have no secret store at hand.
DEFAULT_SCRUBBER: Final = Scrubber()


def scrub(text: str, *, known_secrets: Iterable[str] = ()) -> str:
    """``text`` with ``known_secrets`` and every secret-looking token replaced by :data:`REDACTED`.

    Builds a :class:`Scrubber` per call when ``known_secrets`` is given; hot
    paths build one with :meth:`Scrubber.from_store` and reuse it.
    """
    secrets = frozenset(known_secrets)
    return (Scrubber(secrets) if secrets else DEFAULT_SCRUBBER)(text)
