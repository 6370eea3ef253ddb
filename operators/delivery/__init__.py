"""Delivery semantics of the channel workers (pure): the per-action ledger (exactly once per action id),
the token-bucket rate limit and the retry backoff. The workers (``zhongtai.services.workers``) and their Redis
state (``connectors.channels.redis_state``) both build on these."""
