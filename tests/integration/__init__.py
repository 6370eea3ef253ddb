"""Integration tests: the local stack (`zhongtai stack up`) and often Flink (docs/architecture.md, "Tests")."""
