"""Long-running services next to the job (docs/architecture.md, "Rooms").

``applier`` (store log → Redis/HBase), ``api`` (REST), ``dashboard``, ``workers`` (channel delivery) and
``profiles`` (profile look-up shared by the API and the CLI). They read and write the stores through
``connectors/`` and never import ``zhongtai.devtools``.
"""
