"""routeledger import-litellm: a LiteLLM config.yaml becomes gateway TOML that parse_config loads."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from routeledger.adapters import Engine, Executor, Served, SystemClock, parse_config
from routeledger.adapters.cli.main import EXIT_OK, EXIT_USAGE, main
from routeledger.adapters.integrations import litellm_config
from routeledger.adapters.integrations.litellm_config import (
    LiteLLMConfigError,
    convert_litellm_yaml,
)
from routeledger.adapters.testing import counter_ids
from routeledger.adapters.testing.fake_provider import FakeProvider
from routeledger.core.budget.values import PeriodKind
from routeledger.core.routing import FailureClass, Strategy
from routeledger.core.time import US_PER_S

LITERAL_KEY = "sk-ant-literal-secret-123"

#: A realistic proxy config: priority by order, a weighted pool, a literal key,
#: fallbacks (one closing a cycle), cooldown settings, budgets, proxy settings.
REALISTIC = f"""
model_list:
  - model_name: gpt-4o
    litellm_params:
      model: azure/gpt-4o-eu
      api_base: https://eu.openai.azure.com/
      api_key: os.environ/AZURE_EU_KEY
      api_version: "2024-06-01"
      rpm: 480
      tpm: 100000
      order: 1
  - model_name: gpt-4o
    litellm_params: {{model: openai/gpt-4o, api_key: os.environ/OPENAI_API_KEY, order: 2, weight: 2}}
    model_info:
      id: openai-4o
      input_cost_per_token: 0.0000025
      output_cost_per_token: 0.00001
      max_input_tokens: 128000
  - model_name: gpt-4o
    litellm_params: {{model: openai/gpt-4o-mini, api_key: os.environ/OPENAI_API_KEY, order: 2, weight: 1}}
  - model_name: claude
    litellm_params:
      model: anthropic/claude-3-5-sonnet-20241022
      api_key: {LITERAL_KEY}
      max_budget: 100
      budget_duration: 30d
  - model_name: cheap
    litellm_params: {{model: groq/llama-3.1-8b-instant, api_key: os.environ/GROQ_API_KEY}}
    tpm: 2000
router_settings:
  routing_strategy: simple-shuffle
  num_retries: 3
  allowed_fails: 2
  cooldown_time: 30
  timeout: 60
  fallbacks: [{{"gpt-4o": ["claude", "cheap"]}}, {{"claude": ["gpt-4o"]}}]
  provider_budget_config:
    openai: {{budget_limit: 50, time_period: 1d}}
  redis_host: localhost
litellm_settings:
  drop_params: true
  max_budget: 500
  budget_duration: 1mo
general_settings:
  master_key: os.environ/LITELLM_MASTER_KEY
  database_url: os.environ/DATABASE_URL
environment_variables:
  OPENAI_API_KEY: sk-env-value-never-copied
"""


def paths(conversion: litellm_config.Conversion, kind: str | None = None) -> set[str]:
    return {f.path for f in conversion.findings if kind is None or f.kind == kind}


def test_a_realistic_config_converts_to_toml_that_parse_config_loads() -> None:
    """Deployments become credentials, models and routes whose chain follows order, weights,
    fallbacks, cooldown settings, timeouts, budgets and the master key."""
    config = parse_config(convert_litellm_yaml(REALISTIC).toml)
    policy = config.policy
    chat = policy.route("gpt-4o")
    assert chat is not None
    assert [[(m.credential, m.model) for m in t.members] for t in chat.chain] == [
        [("azure", "gpt-4o-eu")],
        [("openai", "gpt-4o"), ("openai", "gpt-4o-mini")],
    ]
    assert chat.chain[1].strategy is Strategy.WEIGHTED
    assert [m.weight for m in chat.chain[1].members] == [2, 1]
    assert chat.fallback == ("claude", "cheap")
    assert config.endpoints["openai"].secret_env == "OPENAI_API_KEY"
    assert config.endpoints["anthropic"].dialect == "anthropic"
    assert config.prices["gpt-4o"].input_micros_per_mtok == 2_500_000
    assert config.prices["gpt-4o"].output_micros_per_mtok == 10_000_000
    rate = policy.rule(FailureClass.RATE_LIMITED)
    assert (rate.allowed_fails, rate.base_us) == (2, 30 * US_PER_S)
    assert config.timeouts.total_us == 60 * US_PER_S
    accounts = {a.account_id: a for a in config.accounts}
    assert accounts["litellm-proxy"].limit == 500_000_000
    assert accounts["litellm-proxy"].period.kind is PeriodKind.MONTH
    assert accounts["provider-openai"].period.kind is PeriodKind.DAY
    assert accounts["deployment-3"].period.kind is PeriodKind.ROLLING
    assert config.clients["litellm-master"].key_env == "LITELLM_MASTER_KEY"


def test_no_secret_is_ever_written_and_a_literal_key_is_reported() -> None:
    """A literal api_key and environment_variables values never reach the TOML; the literal
    key's credential reads a placeholder variable and the refusal is reported."""
    conversion = convert_litellm_yaml(REALISTIC)
    assert LITERAL_KEY not in conversion.toml and "sk-env-value" not in conversion.toml
    config = parse_config(conversion.toml)
    assert config.endpoints["anthropic"].secret_env == "ROUTELEDGER_SECRET_ANTHROPIC"
    assert paths(conversion, "secret_refused") == {"model_list[3].litellm_params.api_key"}
    assert LITERAL_KEY not in conversion.report()


def test_every_key_that_did_not_map_is_reported_with_its_path() -> None:
    """LiteLLM-only params and settings, and a fallback cycle are each reported."""
    conversion = convert_litellm_yaml(REALISTIC)
    assert {
        "model_list[0].litellm_params.api_version",
        "model_list[1].model_info.id",
        "router_settings.num_retries",
        "router_settings.redis_host",
        "router_settings.fallbacks",
        "litellm_settings.drop_params",
        "general_settings.database_url",
        "environment_variables",
    } <= paths(conversion, "not_mapped")
    cycle = [f for f in conversion.findings if f.path == "router_settings.fallbacks"]
    assert "claude -> gpt-4o" in cycle[0].reason


def test_deployment_rpm_and_tpm_become_the_members_configured_limits() -> None:
    """A deployment's rpm/tpm (in litellm_params or beside them) are written on its member,
    and the gateway's policy admits by them (G6 configured limits)."""
    conversion = convert_litellm_yaml(REALISTIC)
    assert '{ credential = "azure", model = "gpt-4o-eu", rpm = 480, tpm = 100_000 }' in (
        conversion.toml
    )
    found = paths(conversion)
    assert "model_list[0].litellm_params.rpm" not in found and "model_list[4].tpm" not in found
    capacities = parse_config(conversion.toml).policy.capacities
    assert capacities["azure"].rates["pair:azure:gpt-4o-eu"] == (480, 100_000)


def test_a_member_limit_switched_off_is_reported_instead(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A LiteLLM limit whose MEMBER_LIMITS entry is None is reported, never emitted."""
    monkeypatch.setattr(
        litellm_config, "MEMBER_LIMITS", {"rpm": "rpm", "tpm": None, "max_parallel_requests": None}
    )
    conversion = convert_litellm_yaml(REALISTIC)
    assert '{ credential = "azure", model = "gpt-4o-eu", rpm = 480 }' in conversion.toml
    assert "model_list[0].litellm_params.rpm" not in paths(conversion)
    assert "model_list[0].litellm_params.tpm" in paths(conversion)


@pytest.mark.parametrize(
    ("text", "path"),
    [
        ("router_settings: {}", "model_list"),
        ("model_list: []", "model_list"),
        ("model_list: [{model_name: a}]", "model_list[0].litellm_params.model"),
        ("model_list: [{litellm_params: {model: openai/x}}]", "model_list[0].model_name"),
        (
            "model_list: [{model_name: a, litellm_params: {model: openai/x}}]\n"
            "router_settings: {allowed_fails: -1}",
            "router_settings.allowed_fails",
        ),
    ],
)
def test_a_config_that_cannot_convert_is_a_typed_error_naming_the_key(text: str, path: str) -> None:
    """A missing or malformed key is a LiteLLMConfigError naming its path."""
    with pytest.raises(LiteLLMConfigError) as raised:
        convert_litellm_yaml(text)
    assert raised.value.path == path


def test_invalid_yaml_is_a_typed_error() -> None:
    """Text that is not YAML is a LiteLLMConfigError, not a PyYAML exception."""
    with pytest.raises(LiteLLMConfigError, match="not valid YAML"):
        convert_litellm_yaml("model_list: [unclosed")


def test_fractional_weights_keep_their_ratio() -> None:
    """LiteLLM's float weights become integers with the same ratio (to 1%)."""
    text = (
        "model_list:\n"
        "  - {model_name: a, litellm_params: {model: openai/x, weight: 0.7}}\n"
        "  - {model_name: a, litellm_params: {model: openai/y, weight: 0.3}}\n"
    )
    route = parse_config(convert_litellm_yaml(text).toml).policy.route("a")
    assert route is not None
    (pool,) = route.chain
    first, second = (m.weight for m in pool.members)
    assert abs(first / second - 0.7 / 0.3) < 0.01


def test_the_cli_prints_toml_on_stdout_and_the_report_on_stderr(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """routeledger import-litellm exits 0, its stdout loads, its stderr names what did not map;
    an unreadable file is exit 2."""
    source = tmp_path / "config.yaml"
    source.write_text(REALISTIC, encoding="utf-8")
    assert main(["import-litellm", str(source)]) == EXIT_OK
    out, err = capsys.readouterr()
    assert parse_config(out).policy.route("cheap") is not None
    assert "import-litellm: router_settings.num_retries: not mapped" in err
    assert LITERAL_KEY not in out + err
    assert main(["import-litellm", str(tmp_path / "missing.yaml")]) == EXIT_USAGE
    assert "cannot read" in capsys.readouterr().err


def test_a_converted_config_serves_through_the_executor(monkeypatch: pytest.MonkeyPatch) -> None:
    """Over loopback, the converted route tries the order-1 deployment (429) and is served by the
    order-2 one, as LiteLLM's order would."""
    monkeypatch.setenv("PRIMARY_KEY", "sk-primary")
    monkeypatch.setenv("SPARE_KEY", "sk-spare")
    with FakeProvider(
        {"primary": {"kind": "rate_limited", "retry_after": 30}, "spare": "ok"}
    ) as up:
        text = (
            "model_list:\n"
            f"  - {{model_name: chat, litellm_params: {{model: openai/primary, api_base: '{up.base_url}',"
            " api_key: os.environ/PRIMARY_KEY, order: 1}}\n"
            f"  - {{model_name: chat, litellm_params: {{model: openai/spare, api_base: '{up.base_url}',"
            " api_key: os.environ/SPARE_KEY, order: 2}}\n"
        )
        config = parse_config(convert_litellm_yaml(text).toml)
        engine = Engine.open("memory://", config, clock=SystemClock(), ids=counter_ids())

        async def go() -> object:
            executor = Executor(engine)
            try:
                body = {"messages": [{"role": "user", "content": "Hi"}]}
                return await executor.chat(body, route="chat", caller_scope="user:t")
            finally:
                await executor.aclose()

        try:
            completion = asyncio.run(go())
        finally:
            engine.close()
        assert [(a.model, a.status) for a in up.attempts()] == [("primary", 429), ("spare", 200)]
    assert isinstance(completion.result, Served)  # type: ignore[attr-defined]
    assert completion.result.upstream_model == "spare"  # type: ignore[attr-defined]
