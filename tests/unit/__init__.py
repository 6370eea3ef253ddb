"""Pure unit tests: no services, no Flink (docs/architecture.md, "Tests")."""
