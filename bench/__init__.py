"""Benchmark harness: the event job side by side with hand-written consumers, a JVM-only SQL job and
raw Kafka consumption, on the same pre-filled topics. Entry point: :func:`bench.run.main`
(``zhongtai bench``). Method and measured numbers: ``bench/README.md``.

Each contender runs in its own child process (``python -m bench.contender``) so that its wall time,
its JVM start-up and its peak RSS (the child's whole process tree) are measured alone.
"""
