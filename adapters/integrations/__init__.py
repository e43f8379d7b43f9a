"""Integrations with the tools gateway authors already use (docs/integrations.md).

Each module imports its third-party library itself, so importing this package
(or ``routeledger.adapters``) costs nothing and needs no optional extra:

* ``litellm_config`` — convert a LiteLLM router/proxy ``config.yaml`` into
  RouteLedger's gateway TOML (``routeledger import-litellm``; PyYAML, the
  ``litellm`` extra);
* ``litellm_router`` — a LiteLLM ``Router`` that picks deployments with
  RouteLedger's engine and reports every attempt's outcome to it (the
  ``litellm`` extra).
"""
