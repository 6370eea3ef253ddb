"""Which operator ids of the event job survive adding computed traits (docs/schema.md "Adding a trait to a
running job"): a savepoint restores an operator's state only into an operator with the same id.

Builds the job graph (no run, no cluster) for three schemas, each in a fresh process (the planner numbers its
nodes with a counter of the JVM; ``reset_sql_node_ids`` restarts it per build anyway): the retail schema
without traits, with its traits, and with one trait more. Prints and writes (``bench/results/trait-uids.json``)
how many operator uids of each build the next one keeps: all operators, and those with keyed state (named).

    PYTHONPATH=$PWD .venv/bin/python -m bench.trait_uids
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

from config.schema import SHIPPED

RESULT = Path(__file__).resolve().parent / "results" / "trait-uids.json"
EXTRA = "  store_visits: {aggregate: count, where: \"props.store_id is not null\", window: 7d}\n"


def _ids(schema_file: str) -> dict[str, str]:
    """operator uid → ``[keyed ]<name>`` of every operator of the stream graph with ``schema_file`` (keyed: it has
    keyed state, what a savepoint restore must map)."""
    from tests.helpers import fresh_names, make_settings
    from zhongtai.jobs.runner import RunOptions, connector_jars, make_envs, register_events_job

    settings = make_settings(schema_file=schema_file)
    n = fresh_names()
    opts = RunOptions(bounded=True, group=n.group, topic_pattern=n.topic_pattern, dlq_topic=n.dlq,
                      redis_prefix=n.prefix, hbase=False, resume=False, job_name=n.job)
    env, t_env = make_envs(settings, opts, connector_jars(settings))
    register_events_job(t_env, settings, opts).attach_as_datastream()
    out = {}
    it = env._j_stream_execution_environment.getStreamGraph().getStreamNodes().iterator()
    while it.hasNext():
        node = it.next()
        keyed = node.getStateKeySerializer() is not None
        uid = node.getTransformationUID()
        out[str(uid) if uid is not None else f"(no uid) {node.getOperatorName()}"] = \
            f"{'keyed ' if keyed else ''}{node.getOperatorName()}"[:100]
    return out


def main() -> None:
    if len(sys.argv) > 1:  # child: one build
        print(json.dumps(_ids(sys.argv[1])))
        return
    text = SHIPPED.with_name("retail_schema.yaml").read_text(encoding="utf-8")
    without = text[:text.index("traits:")]
    with tempfile.TemporaryDirectory() as d:
        files = {"no traits": Path(d, "a.yaml"), "9 traits": Path(d, "b.yaml"), "10 traits": Path(d, "c.yaml")}
        files["no traits"].write_text(without, encoding="utf-8")
        files["9 traits"].write_text(text, encoding="utf-8")
        files["10 traits"].write_text(text + EXTRA, encoding="utf-8")
        builds = {}
        for name, f in files.items():
            res = subprocess.run([sys.executable, "-m", "bench.trait_uids", str(f)], capture_output=True, text=True,
                                 check=True)
            builds[name] = json.loads(res.stdout.strip().splitlines()[-1])
    names = list(builds)
    report = {}
    for a, b in zip(names, names[1:]):
        kept = set(builds[a]) & set(builds[b])
        keyed = {i for i, name in builds[a].items() if name.startswith("keyed ")}
        report[f"{a} -> {b}"] = {"operators_before": len(builds[a]), "kept": len(kept),
                                 "keyed_before": len(keyed), "keyed_kept": len(keyed & kept),
                                 "keyed_lost": sorted(f"{i}: {builds[a][i]}" for i in keyed - kept)}
    RESULT.write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(json.dumps(report, indent=1, ensure_ascii=False))


if __name__ == "__main__":
    main()
