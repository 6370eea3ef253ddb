"""Dynamic list prices within guard rails, and personal offers kept apart from them (docs/pricing.md).

``operators.pricing.policy``: policies, rails per category and the list-price policy (no personalised list
prices); ``operators.pricing.step``: one item's step (absorb inputs, settle and reprice at ticks);
``operators.pricing.offers``: a rule's offer request decided against the list price and the rails.
"""
