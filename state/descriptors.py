"""Flink keyed-state declarations of the job: one function per piece of state, named and versioned.

Each returns a fresh descriptor (descriptors are created inside ``open()`` of a Flink function; pyflink
is imported lazily so that ``state`` stays importable without the JVM). The value codecs live next to
the pure types they encode (``state.identity`` for the identity graph); bumping a codec version is
deliberate and old versions keep decoding.
"""

from __future__ import annotations

from typing import Any

#: Identity graph, cid → component blob (``state.identity.encode_component``) stored as a latin-1 string
#: (a bijection of the bytes: byte-array state values fail to snapshot in thread mode). No TTL: bounded
#: by the number of distinct identifiers, and forgetting it would split persons silently.
IDENTITY_COMPONENTS = "identity-components-v1"
#: Identity graph, identifier ("type:value") → cid. No TTL, for the same reason.
IDENTITY_INDEX = "identity-index-v1"


def component_state() -> Any:
    from pyflink.common import Types
    from pyflink.datastream.state import MapStateDescriptor

    return MapStateDescriptor(IDENTITY_COMPONENTS, Types.STRING(), Types.STRING())


def index_state() -> Any:
    from pyflink.common import Types
    from pyflink.datastream.state import MapStateDescriptor

    return MapStateDescriptor(IDENTITY_INDEX, Types.STRING(), Types.STRING())


#: Identity graph, the dynamic overlay set by control messages: JSON ``{"blocked": [...], "isolated": [...]}``.
IDENTITY_OVERLAY = "identity-overlay-v1"


def overlay_state() -> Any:
    from pyflink.common import Types
    from pyflink.datastream.state import ValueStateDescriptor

    return ValueStateDescriptor(IDENTITY_OVERLAY, Types.STRING())
