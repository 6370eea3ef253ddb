"""Topic creation moved to ``connectors.kafka_admin`` (the job and the services use it too); this name
stays for the local stack's callers."""

from connectors.kafka_admin import create_topics

__all__ = ["create_topics"]
