"""Developer tooling: the local stack, the synthetic stream and its oracle, the demo (docs/architecture.md).

``stack`` starts Kafka, Redis, HBase and a Flink cluster on this machine; ``generator`` writes a seeded stream
with its exact expected answer (the oracle the tests check the job against); ``demo`` runs the two with the
job. Neither the job (``zhongtai.jobs``, ``pipelines``, ``connectors``) nor the services import this package.
"""
