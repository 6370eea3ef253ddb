"""The REST API (``zhongtai api``, docs/api.md): profiles, rules and experiments over HTTP.

``zhongtai.services.api.app.create_app(settings)`` builds the Starlette app; ``zhongtai.services.api.rules`` holds the
rule-set operations shared with ``zhongtai rules``. Nothing is imported or connected at import time.
"""
