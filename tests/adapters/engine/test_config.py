"""Engine configuration files: the documented example loads; every error names key and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from routeledger.adapters.engine.config import ConfigError, load_config, load_policy, parse_config
from routeledger.core.budget.values import AccountScope, PeriodKind, Unit
from routeledger.core.routing import FailureClass, Strategy

ROOT = Path(__file__).resolve().parents[3]
EXAMPLE = ROOT / "docs" / "examples" / "gateway.toml"

MINIMAL = """
[credentials.k]
provider = "openai"

[models.m]

[routes.chat]
[[routes.chat.chain]]
members = [{ credential = "k", model = "m" }]
"""


def test_the_documented_example_loads_into_policy_endpoints_prices_and_accounts() -> None:
    """docs/examples/gateway.toml describes a valid engine configuration."""
    config = load_config(EXAMPLE)
    assert [route.alias for route in config.policy.routes] == ["chat", "cheap", "claude"]
    assert config.dialect("claude") == "anthropic"
    web = config.clients["web"]
    assert (web.key_env, web.caller_scope, web.accounts) == (
        "WEB_CLIENT_KEY",
        "team:web",
        ("team-a",),
    )
    assert config.server.admin_key_env == "ROUTELEDGER_ADMIN_KEY"
    assert config.policy.routes[0].chain[0].strategy is Strategy.ROUND_ROBIN
    assert config.endpoints["primary"].secret_env == "ROUTELEDGER_SECRET_PRIMARY"
    assert config.prices["ok-model"].estimate_micros(1_000, 512) == 6_096
    (account,) = config.accounts
    assert (account.account_id, account.scope, account.unit, account.limit) == (
        "team-a",
        AccountScope.TEAM,
        Unit.MICROS,
        5_000_000,
    )
    assert account.period.kind is PeriodKind.DAY
    assert config.engine.installation_id == "demo-gateway"
    assert load_policy(EXAMPLE) == config.policy


def test_defaults_fill_everything_optional() -> None:
    """A file with only credentials, models and routes is complete."""
    config = parse_config(MINIMAL)
    assert config.accounts == ()
    assert config.timeouts.connect_us > 0
    assert config.policy.rule(FailureClass.RATE_LIMITED) is not None


@pytest.mark.parametrize(
    ("text", "key", "line", "fragment"),
    [
        (
            MINIMAL + "[accounts.a]\nscope = 'team'\nlimit = '5'\n",
            "accounts.a.limit",
            12,
            "expected int",
        ),
        (
            MINIMAL + "[accounts.a]\nscope = 'galaxy'\nlimit = 5\n",
            "accounts.a.scope",
            11,
            "must be one of key, user, team, org, provider, model; got str 'galaxy'",
        ),
        (
            MINIMAL
            + "[accounts.a]\nscope = 'team'\nlimit = 5\nperiod = { kind = 'day', zone = 'Europe/Pariss' }\n",
            "accounts.a.period.zone",
            13,
            "unknown time zone 'Europe/Pariss'",
        ),
        (
            MINIMAL + "[accounts.a]\nscope = 'team'\nlimit = -5\n",
            "accounts.a.limit",
            12,
            "must be >= 0, got -5",
        ),
        (
            MINIMAL.replace('provider = "openai"', 'provider = "openai"\ncolour = "red"'),
            "credentials.k",
            2,
            "colour",
        ),
        (
            MINIMAL.replace('credential = "k"', 'credential = "ghost"'),
            "routes.chat.chain[0].members[0].credential",
            9,
            "ghost",
        ),
        (
            MINIMAL + "[failures.made_up]\nscope = 'pair'\naction = 'cooldown'\n",
            "failures",
            10,
            "must be one of auth_error,",
        ),
        (MINIMAL + "[limits]\nattempts_max = 0\n", "limits.attempts_max", 11, ""),
    ],
    ids=[
        "wrong-type",
        "bad-enum",
        "unknown-zone",
        "negative-limit",
        "unknown-key",
        "unknown-credential",
        "unknown-failure",
        "zero-limit",
    ],
)
def test_errors_name_the_key_and_the_line(text: str, key: str, line: int, fragment: str) -> None:
    """Structural and policy errors are ConfigError with the TOML key path and its line."""
    with pytest.raises(ConfigError) as caught:
        parse_config(text, source="gw.toml")
    error = caught.value
    assert error.key.startswith(key)
    assert error.line == line
    assert fragment in str(error)
    assert str(error).startswith(f"gw.toml:{line}: ")


def test_invalid_toml_names_the_line() -> None:
    """A syntax error is a ConfigError carrying TOML's line number."""
    with pytest.raises(ConfigError, match="not valid TOML") as caught:
        parse_config("[routes\nx = 1\n", source="gw.toml")
    assert caught.value.line == 1


def test_unreadable_files_are_config_errors(tmp_path: Path) -> None:
    """A missing, binary or oversized file is a ConfigError naming it."""
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.toml")
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(binary)
    big = tmp_path / "big.toml"
    big.write_bytes(b"#" * (4 * 1024 * 1024 + 1))
    with pytest.raises(ConfigError, match="more than"):
        load_config(big)


def test_the_pool_and_continuation_settings_are_read() -> None:
    """[http] sets the executor's pool; a route's continue_instruction is kept by alias."""
    text = MINIMAL.replace("[routes.chat]\n", '[routes.chat]\ncontinue_instruction = "Go on."\n')
    config = parse_config(text + "[http]\nmax_connections = 8\npool_timeout_us = 1_000\n")
    assert (config.http.max_connections, config.http.pool_timeout_us) == (8, 1_000)
    assert config.continuations == {"chat": "Go on."}
    assert parse_config(MINIMAL).continuations == {}


@pytest.mark.parametrize(
    ("table", "key"),
    [("timeouts", "idle_us"), ("timeouts", "first_token_us"), ("http", "pool_timeout_us")],
)
def test_a_zero_timeout_or_pool_size_names_its_key_and_line(table: str, key: str) -> None:
    """A timeout or pool setting <= 0 (which would fail every attempt) is refused by name."""
    with pytest.raises(ConfigError) as caught:
        parse_config(MINIMAL + f"[{table}]\n{key} = 0\n")
    assert caught.value.key == f"{table}.{key}"
    assert caught.value.line == MINIMAL.count("\n") + 2
    assert "must be > 0" in str(caught.value)


def test_each_route_knows_its_dialect() -> None:
    """A route of Anthropic credentials speaks anthropic; a dialect setting overrides the provider."""
    text = MINIMAL.replace('provider = "openai"', 'provider = "anthropic"')
    assert parse_config(text).dialect("chat") == "anthropic"
    text = MINIMAL.replace('provider = "openai"', 'provider = "vllm"\ndialect = "openai"')
    assert parse_config(text).dialect("chat") == "openai"
    with pytest.raises(ConfigError) as caught:
        parse_config(MINIMAL.replace('provider = "openai"', 'provider = "x"\ndialect = "soap"'))
    assert caught.value.key == "credentials.k.dialect"


def test_a_failure_row_override_names_only_what_it_changes() -> None:
    """A [failures.<class>] table may name one field; the default row's others are kept."""
    from routeledger.core.routing import DEFAULT_FAILURE_TABLE

    text = MINIMAL + "[failures.provider_unavailable]\nretry_same = 0\n"
    rule = parse_config(text).policy.rule(FailureClass.PROVIDER_UNAVAILABLE)
    default = DEFAULT_FAILURE_TABLE[FailureClass.PROVIDER_UNAVAILABLE]
    assert rule.retry_same == 0 and default.retry_same == 1
    assert (rule.scope, rule.action, rule.base_us, rule.factor, rule.max_us, rule.fallback) == (
        default.scope,
        default.action,
        default.base_us,
        default.factor,
        default.max_us,
        default.fallback,
    )
    with pytest.raises(ConfigError) as caught:
        parse_config(MINIMAL + "[failures.provider_unavailable]\nretry_same = -1\n")
    assert "retry_same" in caught.value.key


def test_allowed_fails_is_a_failure_row_field_checked_at_load() -> None:
    """``allowed_fails`` alone overrides the row (0 cools at the first 5xx); over the limit names the key."""
    text = MINIMAL + "[failures.provider_unavailable]\nallowed_fails = 0\n"
    rule = parse_config(text).policy.rule(FailureClass.PROVIDER_UNAVAILABLE)
    assert (rule.allowed_fails, rule.retry_same) == (0, 1)
    with pytest.raises(ConfigError) as caught:
        parse_config(MINIMAL + "[failures.connect_error]\nallowed_fails = 11\n")
    assert caught.value.key == "failures.connect_error.allowed_fails"


RULE = "\n[[classification.rules]]\n"


@pytest.mark.parametrize(
    ("rules", "key", "line", "fragment"),
    [
        (RULE + 'failure = "model_not_supported"\nbody = "x("\n', "body", 17, "regular expression"),
        (RULE + 'failure = "nope"\nstatus = 400\n', "failure", 16, "must be one of"),
        (RULE + 'failure = "rate_limited"\nstatus = [429, 700]\n', "status[1]", 17, "400-599"),
        (RULE + 'failure = "rate_limited"\nstatus = "429"\n', "status", 17, "got str"),
        (RULE + 'failure = "caller_cancelled"\nstatus = 429\n', "failure", 16, "by the gateway"),
        (RULE + 'failure = "rate_limited"\nheader = "x y"\n', "header", 17, "not a header"),
        (RULE + 'failure = "rate_limited"\nheader_value = "1"\n', "header_value", 17, "needs"),
        (RULE + 'failure = "rate_limited"\n', "", 15, "at least one of"),
        (RULE + 'failure = "rate_limited"\nstatus = 429\ncolour = 1\n', "", 15, "colour"),
    ],
    ids=[
        "regex",
        "class",
        "status-range",
        "status-type",
        "local",
        "header",
        "value",
        "empty",
        "extra",
    ],
)
def test_classification_rule_errors_name_file_line_and_key(
    rules: str, key: str, line: int, fragment: str
) -> None:
    """A bad regex, class, status or header in a rule is a ConfigError naming file, line, key."""
    with pytest.raises(ConfigError) as caught:
        parse_config(
            MINIMAL + RULE + 'failure = "rate_limited"\nstatus = 429\n' + rules, source="gw.toml"
        )
    error = caught.value
    assert error.key == f"classification.rules[1]{'.' + key if key else ''}"
    assert str(error).startswith(f"gw.toml:{line}: ")
    assert fragment in str(error)


def test_classification_rules_extend_the_default_classifier() -> None:
    """Rules become rows tried before the built-in table (DEFAULT_CLASSIFIER.extended)."""
    from routeledger.adapters.providers.observe import DEFAULT_CLASSIFIER, Provider

    config = parse_config(
        MINIMAL + RULE + 'failure = "quota_exhausted"\nstatus = [429]\nbody = "tier-cap"\n'
    )
    classifier = config.classifier()
    assert classifier.rules[1:] == DEFAULT_CLASSIFIER.rules
    ask = {"provider": Provider.OPENAI, "status": 429}
    assert classifier.classify("rate limit", body='{"x": "Tier-Cap hit"}', **ask) == (
        FailureClass.QUOTA_EXHAUSTED
    )
    assert classifier.classify("rate limit", body="{}", **ask) == FailureClass.RATE_LIMITED
    assert parse_config(MINIMAL).classifier() is DEFAULT_CLASSIFIER
