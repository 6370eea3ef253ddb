"""Pipeline tests: the job graph on the embedded Flink mini-cluster, no local stack (docs/architecture.md)."""
