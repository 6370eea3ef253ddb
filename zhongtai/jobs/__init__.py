"""The job launcher: what builds, runs and ships the Flink event job (docs/architecture.md, "Rooms").

``runner`` runs the job on the embedded mini-cluster (``zhongtai run``) and holds the job's Flink options;
``job_main`` is the script a Flink cluster runs; ``submit`` ships it there (``zhongtai submit``); ``metrics``
turns on Flink's Prometheus reporter for the job. Never imports ``zhongtai.devtools`` (one declared exception
in .importlinter: ``submit`` runs the wheel's Flink CLI configured by ``zhongtai.devtools.stack``).
"""
