"""The event collector (``zhongtai collect``, docs/collector.md): Segment-like HTTP events → Kafka.

``zhongtai.services.collector.app.create_app(settings)`` builds the Starlette app; :mod:`.mapping` is the pure
mapping of messages onto the envelope; ``zt.js`` beside this file is the browser SDK it serves. Nothing is
imported or connected at import time.
"""
