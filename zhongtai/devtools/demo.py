"""``zhongtai demo``: a sample stream through the job, then what landed in Redis, checked against the truth."""

from __future__ import annotations

import time
import uuid

from config.settings import Settings


def run_demo(settings: Settings, *, events: int = 50_000, persons: int = 1_000) -> int:
    from connectors.redis_store import RedisStore
    from zhongtai.devtools.generator import GeneratorConfig
    from zhongtai.devtools.generator.produce import produce
    from zhongtai.jobs.runner import RunOptions, run_events_job

    run = uuid.uuid4().hex[:6]
    prefix = settings.in_namespace(f"zt.demo{run}.events.")
    print(f"1/3 producing {events:,} events ({persons:,} persons, ~2% bad on purpose) to {prefix}*")
    rep = produce(settings, GeneratorConfig(seed=2026, persons=persons, events=events, topic_prefix=prefix,
                                            partitions=settings.kafka.partitions), name=f"demo{run}", progress=True)
    import json

    expected = json.loads(rep.expected_path.read_text()) if rep.expected_path else None
    print("2/3 running the event job (identity graph, profiles, tags, experiments, rules) on the embedded "
          "Flink mini-cluster until the topics are drained")
    t0 = time.monotonic()
    run_events_job(settings, RunOptions(bounded=True, group=settings.in_namespace(f"demo{run}"),
                                        topic_pattern=settings.pattern_in_namespace(f"zt\\.demo{run}\\.events\\..*"),
                                        redis_prefix=settings.redis.prefix, resume=False,
                                        job_name=settings.in_namespace(f"demo{run}"), rules=True))
    took = time.monotonic() - t0
    store = RedisStore(settings.redis)
    stats = store.stats()
    print(f"3/3 done in {took:.1f} s ({events / took:,.0f} events/s including job start-up)\n")
    print(f"Pipeline totals (Redis {settings.redis.prefix}:stats):")
    for k in ("received", "valid", "unique", "dlq"):
        print(f"  {k:<10} {stats.get(k, 0):>10,}")
    for k, v in sorted(stats.items()):
        if k.startswith("dlq:"):
            print(f"    {k:<28} {v:>6,}")
    counters = store.all_counters()
    top: dict[str, list[int]] = {}
    for key, h in counters.items():
        scope = key.rsplit(":", 1)[0]
        if scope == "all":
            continue
        t = top.setdefault(scope, [0, 0, 0])
        t[0] += int(h.get("views", 0))
        t[1] += int(h.get("purchases", 0))
    print("\nTop campaign|channel by purchases (live minute counters summed):")
    for scope, (v, p, _) in sorted(top.items(), key=lambda kv: -kv[1][1])[:8]:
        print(f"  {scope:<28} views {v:>7,}  purchases {p:>5,}  conversion {p / v if v else 0:6.1%}")
    ids = store.id_mapping()
    person_ids = set(ids.values())
    truth = len(expected.get("profiles", {})) if expected else 0
    print(f"\nOne view of each person: {len(ids):,} identifiers linked into {len(person_ids):,} persons "
          f"(the guard-railed batch resolution of the same events has {truth:,} persons with events)")
    print(f"Tags (Redis {settings.redis.prefix}:tag:*):")
    for tag in ("high_value", "new_user", "cart_abandoner", "churn_risk", "potential_churn", "vip_lapsed"):
        print(f"  {tag:<16} {len(store.tag_members(tag)):>6,} persons")
    actions = store.action_counters()
    if actions:
        print("Marketing actions (rule|channel, and suppressions with their reason):")
        for k, v in sorted(actions.items(), key=lambda kv: -kv[1])[:10]:
            print(f"  {k:<40} {v:>6,}")
    if expected:
        exact = all(stats.get(k) == v for k, v in expected["stats"].items() if k != "duplicates")
        print(f"\nEvery total equals the generator's ground truth: {'yes' if exact else 'NO'}")
    sample = next(iter(sorted(ids)), "user_id:u1")
    print(f"\nNext: `zhongtai profile get {sample}` for one person (identifiers, tags, profile); "
          "`zhongtai dashboard` for the live page; `zhongtai worker --channel email` to deliver actions; "
          "docs/semantics.md and docs/identity.md for what is computed.")
    store.close()
    return 0
