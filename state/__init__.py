"""Declared keyed state of the Python operators.

The event job keeps all of its keyed state in Flink SQL operators on the JVM (dedup by event_id,
the minute-counter and person-minute aggregates), bounded by ``table.exec.state.ttl`` (see
``pipelines.events.job_options``: max(dedup TTL, allowed lateness + skew + 1 h)). Python operators
that need keyed state (identity graph, tags, rules) declare it here: descriptor name, versioned
codec and TTL.
"""
