"""Convert a LiteLLM router/proxy ``config.yaml`` into RouteLedger's gateway TOML.

``routeledger import-litellm config.yaml > gateway.toml`` calls
:func:`convert_litellm_yaml`; the TOML it returns is what
:func:`~routeledger.adapters.engine.config.parse_config` loads, and every key
that did not map is a :class:`Finding` (the command prints them on stderr).

LiteLLM's format, as documented (docs/integrations.md cites the pages):
``model_list`` entries (deployments) with ``model_name`` (the public name: a
RouteLedger route) and ``litellm_params`` (``model: provider/name``, ``api_key``,
``api_base``, ``order``, ``weight``, ``rpm``, ``tpm``, ``max_budget``,
``budget_duration``...), ``model_info``; ``router_settings`` (``routing_strategy``,
``allowed_fails``, ``allowed_fails_policy``, ``cooldown_time``, ``fallbacks``,
``context_window_fallbacks``, ``default_fallbacks``, ``timeout``,
``provider_budget_config``...); ``litellm_settings`` (``max_budget``,
``budget_duration``, ``request_timeout``, ``fallbacks``...); ``general_settings``
(``master_key``...).

Secrets are never written: ``api_key: os.environ/X`` becomes ``secret_env = "X"``;
a literal key is refused (a finding) and replaced by a placeholder variable name.
"""

from __future__ import annotations

import importlib
import json
import re
from collections.abc import Iterator, Mapping
from typing import Any, Final

import attrs

from routeledger.core.errors import UsageError
from routeledger.core.routing import (
    DEFAULT_FAILURE_TABLE,
    FailureClass,
)
from routeledger.core.routing.policy import (
    ALLOWED_FAILS_MAX,
    CHAIN_TARGETS_MAX,
    FALLBACKS_MAX,
    WEIGHT_MAX,
)
from routeledger.core.time import US_PER_S

__all__ = [
    "MEMBER_LIMITS",
    "Conversion",
    "Finding",
    "LiteLLMConfigError",
    "convert_litellm_config",
    "convert_litellm_yaml",
]

#: Largest LiteLLM config read, in bytes. Why: a model_list of thousands of
#: deployments is well under 4 MiB; anything bigger is a mistake.
LITELLM_CONFIG_BYTES_MAX: Final = 4 * 1024 * 1024

#: LiteLLM's per-deployment limits and the RouteLedger member field each becomes
#: (``{ credential = ..., model = ..., rpm = 480 }``), or None where RouteLedger
#: has no per-member field (reported, not emitted).
MEMBER_LIMITS: Final[Mapping[str, str | None]] = {
    "rpm": "rpm",
    "tpm": "tpm",
    # Per deployment in LiteLLM; RouteLedger's max_in_flight is per credential.
    "max_parallel_requests": None,
}
#: The member field each limit is planned to become (named in the report).
_PLANNED_MEMBER_FIELD: Final = {
    "rpm": "rpm",
    "tpm": "tpm",
    "max_parallel_requests": "max_in_flight",
}

#: Provider -> (default base URL, LiteLLM's default key variable). Why these:
#: providers whose API is OpenAI's or Anthropic's, which the executor speaks.
_PROVIDERS: Final[Mapping[str, tuple[str, str]]] = {
    "openai": ("https://api.openai.com/v1", "OPENAI_API_KEY"),
    "anthropic": ("https://api.anthropic.com/v1", "ANTHROPIC_API_KEY"),
    "groq": ("https://api.groq.com/openai/v1", "GROQ_API_KEY"),
    "mistral": ("https://api.mistral.ai/v1", "MISTRAL_API_KEY"),
    "deepseek": ("https://api.deepseek.com/v1", "DEEPSEEK_API_KEY"),
    "openrouter": ("https://openrouter.ai/api/v1", "OPENROUTER_API_KEY"),
}
#: Providers that speak OpenAI's chat completions at a given api_base.
_OPENAI_COMPATIBLE: Final = frozenset(
    {*_PROVIDERS, "hosted_vllm", "together_ai", "fireworks_ai", "xai", "perplexity", "ollama_chat"}
)
#: The failure classes LiteLLM's deployment cooldown stands for: every class that
#: cools a pair by default (auth errors and unknown models suspend instead).
_COOLING: Final = tuple(
    failure
    for failure, rule in DEFAULT_FAILURE_TABLE.items()
    if rule.action.value == "cooldown" and rule.scope.value == "pair"
)
#: ``allowed_fails_policy`` keys -> the classes they count.
_ALLOWED_FAILS_POLICY: Final[Mapping[str, tuple[FailureClass, ...]]] = {
    "RateLimitErrorAllowedFails": (FailureClass.RATE_LIMITED,),
    "TimeoutErrorAllowedFails": (
        FailureClass.TIMEOUT_BEFORE_RESPONSE,
        FailureClass.FIRST_TOKEN_TIMEOUT,
        FailureClass.STREAM_STALLED,
    ),
    "InternalServerErrorAllowedFails": (FailureClass.PROVIDER_UNAVAILABLE,),
    "AuthenticationErrorAllowedFails": (FailureClass.AUTH_ERROR,),
}
_MICROS_PER_USD: Final = 1_000_000
#: USD per token -> micro-USD per million tokens.
_MICROS_PER_MTOK_PER_USD_PER_TOKEN: Final = 10**12
_DURATION: Final = re.compile(r"\s*(\d+)\s*(s|m|h|d|w|mo)\s*")
_DURATION_US: Final = {"s": 1, "m": 60, "h": 3_600, "d": 86_400, "w": 604_800}
_ID_UNSAFE: Final = re.compile(r"[^a-z0-9_-]+")

#: Why each known but unmapped setting does not map.
_REASONS: Final[Mapping[str, str]] = {
    "num_retries": "RouteLedger retries by failure class (retry_same, allowed_fails in "
    "[failures.*]) and caps a request with [limits] attempts_max",
    "retry_after": "RouteLedger waits for a pair's own Retry-After or cooldown, not a fixed delay",
    "retry_policy": "per-exception retry counts: RouteLedger's retry_same per failure class",
    "model_group_retry_policy": "per-group retry counts: RouteLedger's table is per failure class",
    "routing_strategy_args": "RouteLedger's strategies take no arguments",
    "model_group_alias": "RouteLedger has no route aliases; name the route itself",
    "content_policy_fallbacks": "a content-filtered answer ends the request in RouteLedger "
    "(content_filtered: fallback = false)",
    "max_fallbacks": "RouteLedger visits each fallback route's chain once",
    "disable_cooldowns": "RouteLedger always records cooldowns; override [failures.<class>] "
    'action = "nothing" by hand if you really want none',
    "enable_pre_call_checks": "RouteLedger checks context windows from [models.*] "
    "context_window_tokens on every pick",
    "stream_timeout": "per-call stream timeout: set [timeouts] first_token_us and idle_us",
}
_LITELLM_PARAMS_REASON: Final = (
    "a parameter LiteLLM adds to the provider call; RouteLedger's executor sends the "
    "caller's request body as is"
)


class LiteLLMConfigError(UsageError):
    """The LiteLLM config cannot be converted; names the key path (``model_list[2].model_name``)."""

    def __init__(self, source: str, path: str, problem: str) -> None:
        self.source = source
        self.path = path
        self.problem = problem
        super().__init__(f"{source}: {path}: {problem}" if path else f"{source}: {problem}")


@attrs.frozen
class Finding:
    """One key of the LiteLLM config that did not map (or mapped only approximately)."""

    path: str
    reason: str
    #: ``not_mapped``, ``approximated`` or ``secret_refused``.
    kind: str = "not_mapped"

    def line(self) -> str:
        """The report line: ``path: kind: reason``."""
        return f"{self.path}: {self.kind.replace('_', ' ')}: {self.reason}"


@attrs.frozen
class Conversion:
    """The gateway TOML and every finding, in the order the config was read."""

    toml: str
    findings: tuple[Finding, ...]
    #: ``(credential, model) -> the model_list indexes of the deployments it stands
    #: for`` (several when deployments share a credential and model).
    members: Mapping[tuple[str, str], tuple[int, ...]] = attrs.field(factory=dict)

    def report(self) -> str:
        """Every finding, one per line (empty when everything mapped)."""
        return "".join(finding.line() + "\n" for finding in self.findings)


def convert_litellm_yaml(text: str, *, source: str = "<litellm config>") -> Conversion:
    """Convert a LiteLLM ``config.yaml`` text (PyYAML: the ``litellm`` extra)."""
    try:
        yaml = importlib.import_module("yaml")
    except ImportError as error:  # pragma: no cover - the extra is part of dev
        raise UsageError(
            f"import-litellm needs PyYAML: pip install 'routeledger[litellm]' ({error})"
        ) from error
    if len(text.encode()) > LITELLM_CONFIG_BYTES_MAX:
        raise LiteLLMConfigError(source, "", f"more than {LITELLM_CONFIG_BYTES_MAX} bytes")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise LiteLLMConfigError(source, "", f"not valid YAML: {error}") from None
    return convert_litellm_config(data, source=source)


def convert_litellm_config(data: object, *, source: str = "<litellm config>") -> Conversion:
    """Convert a loaded LiteLLM config (the mapping ``yaml.safe_load`` returns)."""
    if not isinstance(data, Mapping):
        raise LiteLLMConfigError(source, "", f"must be a mapping, got {type(data).__name__}")
    builder = _Builder(source)
    builder.convert(data)
    members: dict[tuple[str, str], tuple[int, ...]] = {}
    for deployment in builder.deployments:
        pair = (deployment.credential, deployment.model)
        members[pair] = (*members.get(pair, ()), deployment.index)
    return Conversion(toml=builder.toml(), findings=tuple(builder.findings), members=members)


# --- the conversion -----------------------------------------------------------


@attrs.frozen
class _Deployment:
    index: int
    path: str
    route: str
    credential: str
    model: str
    order: int | None
    weight: float | None
    limits: Mapping[str, int]


@attrs.define
class _Builder:
    source: str
    findings: list[Finding] = attrs.field(factory=list)
    credentials: dict[str, dict[str, Any]] = attrs.field(factory=dict)
    credential_keys: dict[tuple[str, str, str], str] = attrs.field(factory=dict)
    models: dict[str, dict[str, Any]] = attrs.field(factory=dict)
    deployments: list[_Deployment] = attrs.field(factory=list)
    fallbacks: dict[str, list[str]] = attrs.field(factory=dict)
    strategy: str = "simple-shuffle"
    failures: dict[str, dict[str, Any]] = attrs.field(factory=dict)
    timeouts: dict[str, int] = attrs.field(factory=dict)
    accounts: dict[str, dict[str, Any]] = attrs.field(factory=dict)
    clients: dict[str, dict[str, Any]] = attrs.field(factory=dict)

    def note(self, path: str, reason: str, kind: str = "not_mapped") -> None:
        self.findings.append(Finding(path, reason, kind))

    def fail(self, path: str, problem: str) -> LiteLLMConfigError:
        return LiteLLMConfigError(self.source, path, problem)

    def convert(self, data: Mapping[str, Any]) -> None:
        sections = ("model_list", "router_settings", "litellm_settings", "general_settings")
        for key in data:
            if key == "environment_variables":
                self.note(
                    key,
                    "values are never copied (they may hold secrets); set them "
                    "in the gateway's environment",
                )
            elif key not in sections:
                self.note(str(key), "not a section of LiteLLM's config this importer knows")
        models = data.get("model_list")
        if not isinstance(models, list) or not models:
            raise self.fail("model_list", "must be a non-empty list of deployments")
        for index, entry in enumerate(models):
            self.deployment(index, entry)
        if not self.deployments:
            raise self.fail("model_list", "no deployment could be converted (see the findings)")
        router = self.section(data, "router_settings")
        settings = self.section(data, "litellm_settings")
        self.router_settings(router, settings)
        self.litellm_settings(settings)
        self.general_settings(self.section(data, "general_settings"))

    def section(self, data: Mapping[str, Any], name: str) -> Mapping[str, Any]:
        value = data.get(name) or {}
        if not isinstance(value, Mapping):
            raise self.fail(name, f"must be a mapping, got {type(value).__name__}")
        return value

    # -- deployments --

    def deployment(self, index: int, entry: object) -> None:
        path = f"model_list[{index}]"
        if not isinstance(entry, Mapping):
            raise self.fail(path, f"must be a mapping, got {type(entry).__name__}")
        route = entry.get("model_name")
        params = entry.get("litellm_params")
        if not isinstance(route, str) or not route:
            raise self.fail(f"{path}.model_name", "must be a non-empty string")
        if not isinstance(params, Mapping) or not isinstance(params.get("model"), str):
            raise self.fail(f"{path}.litellm_params.model", "must be a string: provider/name")
        if "*" in route:
            self.note(
                f"{path}.model_name",
                f"wildcard route {route!r}: RouteLedger routes name "
                "their models explicitly; add a route per model you serve",
            )
            return
        if " " in route:
            raise self.fail(f"{path}.model_name", f"{route!r}: a route name has no spaces")
        provider, model = self.provider_model(f"{path}.litellm_params.model", params["model"])
        credential = self.credential(f"{path}.litellm_params", provider, params)
        self.model(path, model, params, entry.get("model_info"))
        limits = self.limits(path, entry, params)
        self.deployments.append(
            _Deployment(
                index=index,
                path=path,
                route=route,
                credential=credential,
                model=model,
                order=self.number(f"{path}.litellm_params.order", params.get("order"), int),
                weight=self.number(f"{path}.litellm_params.weight", params.get("weight"), float),
                limits=limits,
            )
        )
        self.leftover_params(f"{path}.litellm_params", params)
        for key in entry:
            if key not in ("model_name", "litellm_params", "model_info", *MEMBER_LIMITS):
                self.note(f"{path}.{key}", "not a deployment key this importer knows")

    def provider_model(self, path: str, value: str) -> tuple[str, str]:
        provider, _, model = value.partition("/")
        if not model:
            self.note(path, f"{value!r} names no provider: taken as openai/{value}", "approximated")
            provider, model = "openai", value
        if not model.strip() or " " in model:
            raise self.fail(path, f"{value!r}: the model name is empty or has spaces")
        return provider.strip().lower(), model

    def credential(self, path: str, provider: str, params: Mapping[str, Any]) -> str:
        default_base, default_env = _PROVIDERS.get(provider, ("", ""))
        base_url = params.get("api_base") or params.get("base_url") or default_base
        key = params.get("api_key")
        env = key.removeprefix("os.environ/") if isinstance(key, str) else ""
        literal = isinstance(key, str) and not key.startswith("os.environ/")
        identity = (provider, str(base_url), f"literal:{hash(key)}" if literal else env)
        known = self.credential_keys.get(identity)
        if known is not None:
            if literal:
                self.note(
                    f"{path}.api_key",
                    f"a literal key is never copied; credential "
                    f"{known!r} reads it from ${self.credentials[known]['secret_env']}",
                    "secret_refused",
                )
            return known
        cid = self.new_credential_id(provider)
        self.credential_keys[identity] = cid
        if literal:
            env = f"ROUTELEDGER_SECRET_{cid.upper().replace('-', '_')}"
            self.note(
                f"{path}.api_key",
                f"a literal key is never copied; set ${env} to it "
                "(or write api_key: os.environ/VAR in the LiteLLM config)",
                "secret_refused",
            )
        elif key is None:
            env = default_env or f"ROUTELEDGER_SECRET_{cid.upper().replace('-', '_')}"
            self.note(
                f"{path}.api_key", f"not given: credential {cid!r} reads ${env}", "approximated"
            )
        table: dict[str, Any] = {"provider": provider, "base_url": str(base_url), "secret_env": env}
        self.credentials[cid] = table
        self.dialect_findings(path, cid, provider, str(base_url))
        return cid

    def new_credential_id(self, provider: str) -> str:
        base = _ID_UNSAFE.sub("-", provider).strip("-") or "provider"
        cid, number = base, 1
        while cid in self.credentials:
            number += 1
            cid = f"{base}-{number}"
        return cid

    def dialect_findings(self, path: str, cid: str, provider: str, base_url: str) -> None:
        if provider not in _OPENAI_COMPATIBLE and provider != "anthropic":
            self.note(
                f"{path}.model",
                f"provider {provider!r}: routed and recorded, but the "
                "executor and routeledger serve speak only OpenAI's and Anthropic's APIs; "
                f"call credential {cid!r} from your own code (Engine) or an OpenAI-"
                "compatible endpoint",
                "approximated",
            )
        if not base_url:
            self.note(
                f"{path}.api_base",
                f"not given and no default known for {provider!r}: "
                f"set base_url of credential {cid!r}",
                "approximated",
            )

    def model(self, path: str, model: str, params: Mapping[str, Any], info: object) -> None:
        info = info if isinstance(info, Mapping) else {}
        table: dict[str, Any] = {}
        for key, field in (
            ("input_cost_per_token", "input_micros_per_mtok"),
            ("output_cost_per_token", "output_micros_per_mtok"),
        ):
            cost = params.get(key, info.get(key))
            if isinstance(cost, int | float) and not isinstance(cost, bool) and cost >= 0:
                table[field] = round(cost * _MICROS_PER_MTOK_PER_USD_PER_TOKEN)
        for key, field in (
            ("max_input_tokens", "context_window_tokens"),
            ("max_output_tokens", "max_output_tokens"),
        ):
            tokens = info.get(key)
            if isinstance(tokens, int) and not isinstance(tokens, bool) and tokens > 0:
                table[field] = tokens
        known = self.models.get(model)
        if known is not None and known != table:
            self.note(
                f"{path}.model_info",
                f"model {model!r} was described differently by an "
                "earlier deployment; the first description is kept",
                "approximated",
            )
        self.models.setdefault(model, table)
        for key in info:
            if key not in (
                "input_cost_per_token",
                "output_cost_per_token",
                "max_input_tokens",
                "max_output_tokens",
            ):
                self.note(
                    f"{path}.model_info.{key}",
                    "RouteLedger names a deployment by its "
                    "credential and model; other model_info is LiteLLM's",
                )

    def limits(
        self, path: str, entry: Mapping[str, Any], params: Mapping[str, Any]
    ) -> dict[str, int]:
        limits: dict[str, int] = {}
        for where, holder in ((path, entry), (f"{path}.litellm_params", params)):
            for key, field in MEMBER_LIMITS.items():
                if key not in holder:
                    continue
                value = holder[key]
                if field is not None and isinstance(value, int) and not isinstance(value, bool):
                    limits[field] = value
                elif field is not None:
                    self.note(f"{where}.{key}", f"not a whole number: {value!r} dropped")
                else:
                    self.note(
                        f"{where}.{key}",
                        f"a per-deployment limit; RouteLedger's "
                        f"{_PLANNED_MEMBER_FIELD[key]} is per credential (value {value!r} "
                        f"dropped: set it on the credential if its deployments share the key)",
                    )
        return limits

    def leftover_params(self, path: str, params: Mapping[str, Any]) -> None:
        handled = {
            "model",
            "api_key",
            "api_base",
            "base_url",
            "order",
            "weight",
            "input_cost_per_token",
            "output_cost_per_token",
            *MEMBER_LIMITS,
        }
        for key in params:
            if key in ("max_budget", "budget_duration"):
                continue
            if key not in handled:
                self.note(f"{path}.{key}", _REASONS.get(key, _LITELLM_PARAMS_REASON))
        if "max_budget" in params:
            index = path[path.index("[") + 1 : path.index("]")]
            self.budget(
                (f"{path}.max_budget", f"{path}.budget_duration"),
                f"deployment-{index}",
                "model",
                params.get("max_budget"),
                params.get("budget_duration"),
            )

    def number(self, path: str, value: object, kind: type[int] | type[float]) -> Any:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise self.fail(path, f"must be a non-negative number, got {value!r}")
        return kind(value)

    # -- settings --

    def router_settings(self, router: Mapping[str, Any], settings: Mapping[str, Any]) -> None:
        handled = {
            "routing_strategy",
            "fallbacks",
            "context_window_fallbacks",
            "default_fallbacks",
            "allowed_fails",
            "allowed_fails_policy",
            "cooldown_time",
            "timeout",
            "provider_budget_config",
        }
        strategy = router.get("routing_strategy", "simple-shuffle")
        self.strategy = str(strategy)
        if self.strategy != "simple-shuffle":
            self.note(
                "router_settings.routing_strategy",
                f"{strategy!r} is LiteLLM's own: pools "
                "are round_robin (weighted where deployments give weight)",
                "approximated",
            )
        for name in ("fallbacks", "default_fallbacks", "context_window_fallbacks"):
            for where, holder in (("router_settings", router), ("litellm_settings", settings)):
                if name in holder:
                    self.fallback_setting(f"{where}.{name}", name, holder[name])
        self.cooldowns(router)
        timeout = router.get("timeout", settings.get("request_timeout"))
        if isinstance(timeout, int | float) and not isinstance(timeout, bool) and timeout > 0:
            self.timeouts["total_us"] = round(timeout * US_PER_S)
        providers = router.get("provider_budget_config") or {}
        for provider, spec in providers.items() if isinstance(providers, Mapping) else ():
            spec = spec if isinstance(spec, Mapping) else {}
            where = f"router_settings.provider_budget_config.{provider}"
            self.budget(
                (f"{where}.budget_limit", f"{where}.time_period"),
                f"provider-{_ID_UNSAFE.sub('-', str(provider).lower())}",
                "provider",
                spec.get("budget_limit"),
                spec.get("time_period"),
            )
        for key in router:
            if key not in handled:
                self.note(
                    f"router_settings.{key}",
                    _REASONS.get(
                        key,
                        "a LiteLLM router setting "
                        "with no RouteLedger equivalent (caching, Redis, alerting, tags...)",
                    ),
                )

    def fallback_setting(self, path: str, name: str, value: object) -> None:
        if name == "default_fallbacks":
            groups = value if isinstance(value, list) else []
            rows: list[tuple[str, object]] = [(d.route, groups) for d in self.deployments]
        else:
            rows = [
                (str(source), targets)
                for row in (value if isinstance(value, list) else [])
                if isinstance(row, Mapping)
                for source, targets in row.items()
            ]
        if name == "context_window_fallbacks":
            self.note(
                path,
                "merged into each route's fallback: RouteLedger falls back on every "
                "failure class whose row allows it, context_length_exceeded included",
                "approximated",
            )
        routes = {d.route for d in self.deployments}
        for source, targets in rows:
            for target in targets if isinstance(targets, list) else [targets]:
                if source not in routes or str(target) not in routes:
                    self.note(path, f"{source} -> {target}: names no converted route")
                elif str(target) != source:
                    self.add_fallback(path, source, str(target))

    def add_fallback(self, path: str, source: str, target: str) -> None:
        chain = self.fallbacks.setdefault(source, [])
        if target in chain:
            return
        if len(chain) >= FALLBACKS_MAX:
            self.note(path, f"{source} -> {target}: a route has at most {FALLBACKS_MAX} fallbacks")
        elif self.reaches(target, source):
            self.note(
                path,
                f"{source} -> {target}: closes a fallback cycle (RouteLedger never "
                "follows a fallback's own fallbacks, and refuses cycles)",
            )
        else:
            chain.append(target)

    def reaches(self, start: str, goal: str) -> bool:
        seen, stack = set(), [start]
        while stack:
            alias = stack.pop()
            if alias == goal:
                return True
            if alias not in seen:
                seen.add(alias)
                stack.extend(self.fallbacks.get(alias, ()))
        return False

    def cooldowns(self, router: Mapping[str, Any]) -> None:
        allowed = router.get("allowed_fails")
        if allowed is not None:
            count = self.bounded_fails("router_settings.allowed_fails", allowed)
            for failure in _COOLING:
                self.failures.setdefault(failure.value, {})["allowed_fails"] = count
        policy = router.get("allowed_fails_policy") or {}
        for key, value in policy.items() if isinstance(policy, Mapping) else ():
            where = f"router_settings.allowed_fails_policy.{key}"
            classes = _ALLOWED_FAILS_POLICY.get(str(key))
            if classes is None:
                self.note(
                    where,
                    "its failures end the request in RouteLedger (request scope): "
                    "nothing to tolerate",
                )
                continue
            for failure in classes:
                self.failures.setdefault(failure.value, {})["allowed_fails"] = self.bounded_fails(
                    where, value
                )
        cooldown = router.get("cooldown_time")
        if isinstance(cooldown, int | float) and not isinstance(cooldown, bool) and cooldown > 0:
            base = round(cooldown * US_PER_S)
            for failure in _COOLING:
                row = self.failures.setdefault(failure.value, {})
                row["base_us"] = base
                if base > DEFAULT_FAILURE_TABLE[failure].max_us:
                    row["max_us"] = base
            self.note(
                "router_settings.cooldown_time",
                "the first cooldown of every pair-cooling "
                "class; RouteLedger then backs off (factor, max_us) and a provider's "
                "Retry-After replaces it",
                "approximated",
            )

    def bounded_fails(self, path: str, value: object) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise self.fail(path, f"must be a non-negative integer, got {value!r}")
        if value > ALLOWED_FAILS_MAX:
            self.note(path, f"{value} capped at RouteLedger's {ALLOWED_FAILS_MAX}", "approximated")
        return min(value, ALLOWED_FAILS_MAX)

    def litellm_settings(self, settings: Mapping[str, Any]) -> None:
        handled = {
            "fallbacks",
            "context_window_fallbacks",
            "default_fallbacks",
            "request_timeout",
            "max_budget",
            "budget_duration",
        }
        if "max_budget" in settings:
            paths = ("litellm_settings.max_budget", "litellm_settings.budget_duration")
            self.budget(
                paths,
                "litellm-proxy",
                "org",
                settings.get("max_budget"),
                settings.get("budget_duration"),
            )
        for key in settings:
            if key not in handled:
                self.note(
                    f"litellm_settings.{key}",
                    _REASONS.get(
                        key,
                        "a LiteLLM module "
                        "setting (callbacks, caching, params); no RouteLedger equivalent",
                    ),
                )

    def general_settings(self, general: Mapping[str, Any]) -> None:
        for key, value in general.items():
            path = f"general_settings.{key}"
            if key != "master_key":
                self.note(
                    path,
                    "a LiteLLM proxy server setting; routeledger serve has its own "
                    "[server] and [clients.*]",
                )
            elif isinstance(value, str) and value.startswith("os.environ/"):
                self.clients["litellm-master"] = {"key_env": value.removeprefix("os.environ/")}
            else:
                env = "ROUTELEDGER_CLIENT_KEY_MASTER"
                self.clients["litellm-master"] = {"key_env": env}
                self.note(
                    path, f"a literal key is never copied; set ${env} to it", "secret_refused"
                )

    def budget(
        self, paths: tuple[str, str], account: str, scope: str, limit: object, duration: object
    ) -> None:
        """Open ``account`` for a LiteLLM budget; ``paths``: where its limit and duration are."""
        path, duration_path = paths
        if isinstance(limit, bool) or not isinstance(limit, int | float) or limit < 0:
            self.note(path, f"not a budget in USD: {limit!r}")
            return
        period = _period(duration)
        if period is None:
            self.note(
                duration_path,
                f"{duration!r} is not a duration (30s, 1h, 1d, 1w, 1mo): the account never resets",
            )
            period = {"kind": "none"}
        self.accounts[account] = {
            "scope": scope,
            "unit": "micros",
            "limit": round(limit * _MICROS_PER_USD),
            "period": period,
        }
        self.note(
            path,
            f"opened as [accounts.{account}]: it is charged by requests that hold "
            "on it (clients' accounts, Engine.request(accounts=...)) and refuses them when "
            "spent; RouteLedger does not take a deployment out of routing for it",
            "approximated",
        )

    # -- routes and output --

    def routes(self) -> Iterator[tuple[str, list[tuple[str, list[_Deployment]]]]]:
        by_route: dict[str, list[_Deployment]] = {}
        for deployment in self.deployments:
            by_route.setdefault(deployment.route, []).append(deployment)
        for alias, members in by_route.items():
            levels = sorted({d.order for d in members if d.order is not None})
            pools = [[d for d in members if d.order == level] for level in levels]
            unordered = [d for d in members if d.order is None]
            if unordered:
                pools.append(unordered)
            if len(pools) > CHAIN_TARGETS_MAX:
                raise self.fail(
                    f"{members[0].path}.litellm_params.order",
                    f"route {alias!r} has {len(pools)} order levels; at most {CHAIN_TARGETS_MAX}",
                )
            yield alias, [(self.pool_strategy(pool), self.unique(pool)) for pool in pools]

    def pool_strategy(self, pool: list[_Deployment]) -> str:
        if any(d.weight is not None for d in pool) and len(pool) > 1:
            return "weighted"
        return "round_robin" if len(pool) > 1 else "priority"

    def unique(self, pool: list[_Deployment]) -> list[_Deployment]:
        seen: dict[tuple[str, str], _Deployment] = {}
        for deployment in pool:
            pair = (deployment.credential, deployment.model)
            if pair in seen:
                self.note(
                    deployment.path,
                    f"the same credential and model as {seen[pair].path}: one RouteLedger member",
                )
            else:
                seen[pair] = deployment
        return list(seen.values())

    def toml(self) -> str:
        return _Writer(self).text()


def _period(duration: object) -> dict[str, Any] | None:
    """LiteLLM's ``budget_duration`` (``30d``, ``1mo``...) as an account period."""
    if not isinstance(duration, str):
        return None if duration is not None else {"kind": "none"}
    match = _DURATION.fullmatch(duration)
    if match is None:
        return None
    count, unit = int(match.group(1)), match.group(2)
    if count <= 0:
        return None
    if count == 1 and unit in ("d", "w", "mo"):
        return {"kind": {"d": "day", "w": "week", "mo": "month"}[unit], "zone": "UTC"}
    if unit == "mo":
        return None
    return {"kind": "rolling", "length_us": count * _DURATION_US[unit] * US_PER_S}


# --- TOML output --------------------------------------------------------------


def _key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key)


def _value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return f"{value:_}" if abs(value) >= 10_000 else str(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{_key(k)} = {_value(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_value(item) for item in value) + "]"
    raise TypeError(f"no TOML form for {value!r}")  # pragma: no cover - the builder's own values


@attrs.define
class _Writer:
    builder: _Builder
    lines: list[str] = attrs.field(factory=list)

    def table(self, header: str, fields: Mapping[str, Any], *, array: bool = False) -> None:
        self.lines.append(f"[[{header}]]" if array else f"[{header}]")
        self.lines.extend(f"{_key(k)} = {_value(v)}" for k, v in fields.items())
        self.lines.append("")

    def text(self) -> str:
        b = self.builder
        self.lines = [
            "# Converted from a LiteLLM config by `routeledger import-litellm`",
            "# (docs/integrations.md). Keys that did not map were reported on stderr.",
            "",
        ]
        for cid, fields in b.credentials.items():
            self.table(f"credentials.{_key(cid)}", fields)
        for model, fields in b.models.items():
            self.table(f"models.{_key(model)}", fields)
        for alias, pools in b.routes():
            fallback = b.fallbacks.get(alias)
            self.table(f"routes.{_key(alias)}", {"fallback": fallback} if fallback else {})
            for strategy, pool in pools:
                self.table(f"routes.{_key(alias)}.chain", self.pool(strategy, pool), array=True)
        for failure, fields in b.failures.items():
            self.table(f"failures.{failure}", fields)
        if b.timeouts:
            self.table("timeouts", b.timeouts)
        for account, fields in b.accounts.items():
            self.table(f"accounts.{_key(account)}", fields)
        for client, fields in b.clients.items():
            self.table(f"clients.{_key(client)}", fields)
        return "\n".join(self.lines)

    def pool(self, strategy: str, pool: list[_Deployment]) -> dict[str, Any]:
        weights = _weights([d.weight for d in pool]) if strategy == "weighted" else None
        members = []
        for index, deployment in enumerate(pool):
            member: dict[str, Any] = {
                "credential": deployment.credential,
                "model": deployment.model,
            }
            if weights is not None:
                member["weight"] = weights[index]
            member.update(deployment.limits)
            members.append(member)
        fields: dict[str, Any] = {} if strategy == "priority" else {"strategy": strategy}
        return {**fields, "members": members}


def _weights(weights: list[float | None]) -> list[int]:
    """LiteLLM's weights (any positive numbers; unset: 1) as RouteLedger's integers,
    scaled so the smallest given weight is at least 1 and ratios survive to 1%."""
    given = [w if w is not None and w > 0 else 1.0 for w in weights]
    scale = 100 / min(given) if any(w != int(w) for w in given) else 1
    return [max(1, min(WEIGHT_MAX, round(w * scale))) for w in given]
