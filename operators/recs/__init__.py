"""Item-to-item recommendations, updated per event (docs/recommendations.md).

``operators.recs.cooccurrence``: the three pure steps (person window → item norm → item neighbours) and
the top-K read; ``operators.recs.recommend``: a person's list from their recent items.
"""
