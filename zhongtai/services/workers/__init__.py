"""Channel workers: deliver ``zt.actions.<channel>`` exactly once per action id (docs/workers.md).

Pure parts (``backoff``, ``ratelimit``, ``ledger``, ``tracking``) hold no clients; ``worker`` is the
loop, wired to Kafka, Redis and the channel adapters by ``build_worker``.
"""
