"""The deployment files, validated offline (no Docker engine, no Kubernetes cluster here).

* ``docker/compose.yaml`` against the Compose Specification's JSON Schema (vendored in
  ``tests/data/compose-spec``), and against the local stack: every service command is a real
  ``zhongtai`` verb (parsed by the CLI's own argparse tree), ports, versions, the Kafka broker's
  properties (``log.retention.ms=-1``), HBase's site and Flink's cluster configuration equal what
  ``zhongtai/devtools/stack`` and ``config/`` say.
* ``deploy/k8s/`` against the Kubernetes JSON schemas of ``kubernetes-validate`` (strict: unknown
  fields fail), the ``FlinkDeployment`` against the Flink Kubernetes Operator's CRD (vendored in
  ``tests/data/flink-kubernetes-operator``, made strict the same way), and against the project: the
  job runs ``zhongtai/jobs/job_main.py`` with options it accepts, the config loads, names and ports agree.
* ``deploy/k8s-overlays/example-namespace`` (a second copy in its own Kubernetes and zhongtai namespace),
  rendered the way the base is read (``render_overlay``; compared with ``kubectl kustomize`` where installed)
  and validated the same way; its pods' settings share no topic, group, key prefix, table or folder with the base.

Each validator also rejects a deliberately broken snippet (the negative controls below).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import functools
import importlib.util
import io
import json
import re
import subprocess
import tomllib
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from config import load_settings
from config.settings import Settings
from connectors.channels.base import CHANNELS
from tests.helpers import DATA, ROOT

DOCKER = ROOT / "docker"
K8S = ROOT / "deploy" / "k8s"
#: Oldest Kubernetes minor the manifests are meant for, and the newest kubernetes-validate knows.
K8S_VERSIONS = ("1.30.0", kubernetes_validate.utils.latest_version())
#: Our images (docker/Dockerfile, docker/flink.Dockerfile) and the interpreter they run.
ZHONGTAI_IMAGE, FLINK_IMAGE, IMAGE_PYTHON = "zhongtai/zhongtai", "zhongtai/flink", "/usr/local/bin/python"


# ---- helpers ------------------------------------------------------------------------------------------
def project_version() -> str:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


def flink_version() -> str:
    from pyflink.version import __version__

    return __version__


def compose() -> dict[str, Any]:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())


def compose_schema_errors(doc: dict[str, Any]) -> list[str]:
    schema = json.loads((DATA / "compose-spec" / "compose-spec.json").read_text())
    validator = jsonschema.Draft202012Validator(schema)
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)]


def interpolate(value: str) -> str:
    """Compose's ``${VAR:-default}`` / ``${VAR}`` with nothing set in the environment, and ``$$``."""
    value = re.sub(r"\$\{(\w+)(?::?-([^}]*))?\}", lambda m: m.group(2) or "", value)
    return value.replace("$$", "$")


def subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices


def argv_error(parser: argparse.ArgumentParser, argv: list[str]) -> str | None:
    """None when ``parser`` accepts ``argv``; else what argparse said."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            parser.parse_args(argv)
    except SystemExit as e:
        return err.getvalue().strip().splitlines()[-1] if err.getvalue() else f"exit {e.code}"
    return None


def bootstrap_module():
    spec = importlib.util.spec_from_file_location("zt_bootstrap", DOCKER / "bootstrap.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def command_error(cmd: list[str]) -> str | None:
    """None when ``cmd`` is a command line our images run: ``zhongtai VERB ...`` parsed by the CLI's own
    argparse tree, ``python /app/docker/bootstrap.py ...`` (whose ``submit`` runs ``zhongtai submit ARGS``),
    or Flink's daemon scripts."""
    from zhongtai.cli import build_parser

    if cmd[0] == "zhongtai":
        return argv_error(build_parser(), cmd[1:])
    if cmd[:2] == ["python", "/app/docker/bootstrap.py"]:
        boot = bootstrap_module()
        if err := argv_error(boot.build_parser(), cmd[2:]):
            return err
        args = boot.build_parser().parse_args(cmd[2:])
        return argv_error(build_parser(), ["submit", *args.submit_args]) if args.step == "submit" else None
    if cmd[:2] == ["bash", "-c"] and re.fullmatch(r'exec "\$\$FLINK_HOME/bin/(job|task)manager\.sh" start-foreground '
                                                 r"\$\$ZT_FLINK_METRICS", cmd[2]):
        return None
    return f"not a command of our images: {cmd}"


def ours(service: dict[str, Any]) -> bool:
    return str(service.get("image", "")).startswith((ZHONGTAI_IMAGE + ":", FLINK_IMAGE + ":"))


def published(service: dict[str, Any]) -> dict[int, int]:
    """container port -> host port of ``127.0.0.1:HOST:CONTAINER`` entries."""
    out = {}
    for p in service.get("ports", []):
        _ip, host, container = str(p).split(":")
        out[int(container)] = int(host)
    return out


def option(cmd: list[str], name: str) -> str:
    return cmd[cmd.index(name) + 1]


def service_settings(service: dict[str, Any]) -> Settings:
    env = {k: interpolate(str(v)) for k, v in service.get("environment", {}).items()}
    return load_settings(env=env)


def flat(tree: dict[str, Any], prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out |= flat(v, f"{prefix}{k}.")
        else:
            out[f"{prefix}{k}"] = str(v)
    return out


def dockerfile(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out, buf = [], ""
    for line in path.read_text().splitlines():
        if not buf and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            buf += line.rstrip()[:-1] + " "
            continue
        buf += line
        word, _, rest = buf.strip().partition(" ")
        out.append((word.upper(), rest.strip()))
        buf = ""
    return out


def dockerfile_vars(path: Path, instruction: str) -> dict[str, str]:
    """``ARG``/``ENV`` names -> values (``KEY=VALUE`` forms)."""
    found = {}
    for word, rest in dockerfile(path):
        if word == instruction:
            for m in re.finditer(r"(\w+)=(\"[^\"]*\"|\S*)", rest):
                found[m.group(1)] = m.group(2).strip('"')
    return found


def local_settings() -> Settings:
    return load_settings(env={})


# ==== docker/compose.yaml ===============================================================================
def test_compose_validates_against_the_compose_specification():
    assert compose_schema_errors(compose()) == []


def test_negative_control_the_compose_schema_rejects_broken_services():
    broken = copy.deepcopy(compose())
    broken["services"]["applier"]["comand"] = broken["services"]["applier"].pop("command")
    broken["services"]["redis"]["ports"] = {"6390": 6390}
    broken["services"]["submit"]["depends_on"]["init"]["condition"] = "service_done"
    errors = compose_schema_errors(broken)
    assert any("comand" in e for e in errors)
    assert any(e.startswith("services/redis/ports") for e in errors)
    assert any(e.startswith("services/submit/depends_on") for e in errors)


def test_every_service_command_is_a_real_zhongtai_verb():
    services = compose()["services"]
    commands = {name: s["command"] for name, s in services.items() if ours(s)}
    assert {name: command_error(cmd) for name, cmd in commands.items()} == dict.fromkeys(commands)
    # the platform is complete: the applier, a worker per channel, the API, the dashboard, the job
    verbs = [cmd[1] for cmd in commands.values() if cmd[0] == "zhongtai"]
    assert sorted(set(verbs)) == ["api", "apply", "dashboard", "worker"]
    channels = [option(cmd, "--channel") for cmd in commands.values() if cmd[:2] == ["zhongtai", "worker"]]
    assert sorted(channels) == sorted(CHANNELS)
    assert commands["submit"][2:] == ["submit"] and commands["init"][2:] == ["init"]


def test_negative_control_the_command_check_rejects_unknown_verbs_and_options():
    assert "invalid choice" in command_error(["zhongtai", "applier"])
    assert "invalid choice" in command_error(["zhongtai", "worker", "--channel", "fax"])
    assert "unrecognized arguments" in command_error(["zhongtai", "apply", "--metrics-prt", "9300"])
    assert "unrecognized arguments" in command_error(["python", "/app/docker/bootstrap.py", "submit", "--drian"])
    assert command_error(["sh", "-c", "zhongtai api"]) is not None


def compose_port_mismatches(doc: dict[str, Any], s: Settings) -> list[str]:
    """Ports of the compose file that differ from the local stack's (``settings`` and the CLI defaults)."""
    from zhongtai.cli import build_parser
    from zhongtai.devtools.stack.flink_cluster import rest_port
    from zhongtai.devtools.stack.kafka import host_port

    services = doc["services"]
    dashboard_port = subparsers(build_parser())["dashboard"].get_default("port")
    expected = {  # service: {container port: host port}; the stack binds 127.0.0.1:<port> for each
        "kafka": {host_port(s.kafka.bootstrap)[1]: host_port(s.kafka.bootstrap)[1]},
        "redis": {s.redis.port: s.redis.port},
        "hbase": {s.hbase.port: s.hbase.port, s.stack.zookeeper_port: s.stack.zookeeper_port},
        "flink-jobmanager": {rest_port(s): rest_port(s)},
        "api": {s.api.port: s.api.port},
        "dashboard": {dashboard_port: dashboard_port},
    }
    bad = [f"{name}: publishes {published(services[name])}, the local stack {want}"
           for name, want in expected.items() if published(services[name]) != want]
    checks = {
        "redis --port": (option(services["redis"]["command"], "--port"), s.redis.port),
        "api --port": (option(services["api"]["command"], "--port"), s.api.port),
        "dashboard --port": (option(services["dashboard"]["command"], "--port"), dashboard_port),
        "kafka controller": (services["kafka"]["environment"]["KAFKA_CONTROLLER_QUORUM_VOTERS"].rsplit(":", 1)[1],
                             s.stack.kafka_controller_port),
    }
    bad += [f"{what}: {got} != {want}" for what, (got, want) in checks.items() if int(got) != want]
    for name, service in services.items():
        if ours(service):
            cs = service_settings(service)
            if (cs.redis.port, cs.hbase.port, rest_port(cs)) != (s.redis.port, s.hbase.port, rest_port(s)):
                bad.append(f"{name}: its settings point at other ports than the local stack's")
    return bad


def test_ports_equal_the_local_stack():
    assert compose_port_mismatches(compose(), local_settings()) == []


def test_negative_control_a_changed_port_is_found():
    broken = copy.deepcopy(compose())
    broken["services"]["redis"]["ports"] = ["127.0.0.1:6391:6391"]
    broken["services"]["api"]["command"][-1] = "8080"
    broken["x-zt-env"]["ZT__HBASE__PORT"] = "9095"
    broken["services"]["applier"]["environment"]["ZT__HBASE__PORT"] = "9095"
    found = compose_port_mismatches(broken, local_settings())
    assert any(f.startswith("redis:") for f in found) and any(f.startswith("api --port") for f in found)
    assert any(f.startswith("applier:") for f in found)


def test_versions_equal_the_local_stack():
    from zhongtai.devtools.stack.jars import HBASE_LOG4J, _hbase_thrift_version

    s, services = local_settings(), compose()["services"]
    assert services["kafka"]["image"] == f"apache/kafka:{s.stack.kafka_version}"
    hbase_args = {"HBASE_VERSION": s.stack.hbase_version,
                  "HBASE_THRIFT_VERSION": _hbase_thrift_version(s.stack.hbase_version), "LOG4J_VERSION": HBASE_LOG4J}
    assert services["hbase"]["build"]["args"] == hbase_args
    assert dockerfile_vars(DOCKER / "hbase.Dockerfile", "ARG") == hbase_args
    assert services["hbase"]["image"] == f"zhongtai/hbase:{s.stack.hbase_version}"
    # Redis: the local stack runs Debian's redis-server of the version its README names
    row = next(ln for ln in (ROOT / "zhongtai/devtools/stack/README.md").read_text().splitlines() if ln.startswith("| redis |"))
    assert services["redis"]["image"] == "redis:" + re.search(r"redis-server` (\d+\.\d+\.\d+)", row).group(1)
    # Flink: both images install the apache-flink wheel of constraints.txt, the one this checkout runs
    assert f"apache-flink=={flink_version()}" in (ROOT / "constraints.txt").read_text().splitlines()
    for name, service in services.items():
        if ours(service):
            assert service["image"].endswith(":" + project_version()), name
    for df in ("Dockerfile", "flink.Dockerfile"):
        runs = " ".join(rest for word, rest in dockerfile(DOCKER / df) if word == "RUN")
        assert "pip install --no-cache-dir -c constraints.txt" in runs, df
        assert dockerfile(DOCKER / df)[0] == ("FROM", "python:3.11-slim-bookworm" + (" AS base" if "flink" in df else ""))
    assert tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"] == ">=3.11,<3.12"


#: Broker properties that differ in containers by necessity: the listeners (two of them, one for the
#: host and one for the containers), the static controller quorum of the image, the data folder.
KAFKA_NETWORK_KEYS = {"listeners", "advertised.listeners", "controller.quorum.bootstrap.servers",
                      "inter.broker.listener.name", "listener.security.protocol.map", "log.dirs"}


def kafka_env_name(prop: str) -> str:
    """The apache/kafka image's variable for a property: '.' -> '_', '_' -> '__', '-' -> '___'."""
    return "KAFKA_" + prop.replace("_", "__").replace("-", "___").replace(".", "_").upper()


def kafka_mismatches(env: dict[str, str], s: Settings) -> list[str]:
    from zhongtai.devtools.stack.kafka import server_properties

    props = dict(ln.split("=", 1) for ln in server_properties(s, Path("/data")).splitlines() if "=" in ln)
    return [f"{k}: local {v!r}, compose {env.get(kafka_env_name(k))!r}" for k, v in props.items()
            if k not in KAFKA_NETWORK_KEYS and env.get(kafka_env_name(k)) != v]


def test_kafka_broker_settings_equal_the_local_stack():
    env = compose()["services"]["kafka"]["environment"]
    assert kafka_mismatches(env, local_settings()) == []
    assert env["KAFKA_LOG_RETENTION_MS"] == "-1"  # no deletion by record age (zhongtai/devtools/stack/kafka.py)
    assert env["KAFKA_NUM_PARTITIONS"] == str(local_settings().kafka.partitions)
    assert env["KAFKA_LOG_DIRS"] == "/var/lib/kafka/data" and "kafka-data:/var/lib/kafka/data" in \
        compose()["services"]["kafka"]["volumes"]


def test_negative_control_a_broker_with_time_retention_is_found():
    env = dict(compose()["services"]["kafka"]["environment"], KAFKA_LOG_RETENTION_MS="604800000")
    del env["KAFKA_TRANSACTION_MAX_TIMEOUT_MS"]
    found = kafka_mismatches(env, local_settings())
    assert [f.split(":")[0] for f in found] == ["transaction.max.timeout.ms", "log.retention.ms"]


def test_containers_share_one_configuration():
    doc = compose()
    services = doc["services"]
    for name, service in services.items():
        if ours(service):
            cs = service_settings(service)  # validated by config.settings: unknown keys would fail here
            assert (cs.kafka.bootstrap, cs.redis.host, cs.hbase.host) == ("kafka:19092", "redis", "hbase"), name
            assert cs.flink.mode == "cluster" and cs.flink.rest_url == "http://flink-jobmanager:8081", name
    assert "INTERNAL://kafka:19092" in services["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"]
    # checkpoints: the job's folder is on the volume every Flink container (and the submitting client,
    # which looks for the newest retained checkpoint) mounts
    ck = service_settings(services["submit"]).checkpoint_url()
    assert ck.startswith("file:///flink-data/")
    for name in ("flink-jobmanager", "flink-taskmanager", "submit"):
        assert "flink-data:/flink-data" in services[name]["volumes"], name
    assert yaml.safe_load((DOCKER / "flink-config.yaml").read_text())["execution"]["checkpointing"][
        "savepoint-dir"].startswith("file:///flink-data/")
    # Redis persists: append-only file on a volume
    redis = services["redis"]["command"]
    assert option(redis, "--appendonly") == "yes" and f"redis-data:{option(redis, '--dir')}" in services["redis"]["volumes"]
    assert set(doc["volumes"]) >= {"kafka-data", "redis-data", "hbase-data", "flink-data"}
    # the workers' contact file is the one in docker/
    assert "./contacts.yaml:/etc/zhongtai/contacts.yaml:ro" in services["worker-email"]["volumes"]
    assert yaml.safe_load((DOCKER / "contacts.yaml").read_text()) == {}


def test_start_up_order():
    services = compose()["services"]
    dep = {name: s.get("depends_on", {}) for name, s in services.items()}
    assert dep["init"] == {"kafka": {"condition": "service_healthy"}, "hbase": {"condition": "service_healthy"}}
    for name in ("applier", "api", "dashboard", "submit", *(f"worker-{c}" for c in CHANNELS)):
        assert dep[name]["init"] == {"condition": "service_completed_successfully"}, name
    assert dep["submit"]["flink-jobmanager"] == {"condition": "service_healthy"}
    assert services["submit"].get("restart", "no") == "no" and services["init"].get("restart", "no") == "no"


def test_the_documented_savepoint_restore_reaches_the_job():
    """docs/deploy.md restores a compose submission from a savepoint through one ZT__ variable."""
    from zhongtai.jobs.runner import RunOptions, flink_options

    var = re.search(r"-e '(ZT__FLINK__OPTIONS__[^=]+)=", (ROOT / "docs" / "deploy.md").read_text()).group(1)
    env = {k: interpolate(str(v)) for k, v in compose()["services"]["submit"]["environment"].items()}
    s = load_settings(env={**env, var: "file:///flink-data/savepoints/savepoint-1"})
    options = flink_options(s, RunOptions(), [], cluster=True)
    assert options["execution.state-recovery.path"] == "file:///flink-data/savepoints/savepoint-1"


def test_prometheus_scrapes_services_that_serve_metrics():
    services = compose()["services"]
    prom = yaml.safe_load((DOCKER / "prometheus.yml").read_text())
    targets = [t for job in prom["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]]
    for target in targets:
        host, port = target.split(":")
        cmd = services[host]["command"]
        served = {"9249"} if host.startswith("flink-") else {option(cmd, "--metrics-port") if "--metrics-port" in cmd
                                                             else option(cmd, "--port")}
        assert port in served, target
    assert {f"worker-{c}:9310" for c in CHANNELS} | {"applier:9300", "api:8800"} <= set(targets)


def test_hbase_site_equals_the_local_stack():
    from zhongtai.devtools.stack.hbase import site_xml

    def props(text: str) -> dict[str, str]:
        return {p.findtext("name"): p.findtext("value") for p in ET.fromstring(text).iter("property")}

    local = props(site_xml(local_settings(), Path("/data")).split("\n", 1)[1])
    docker = props((DOCKER / "hbase-site.xml").read_text())
    assert docker == local  # /data is the container's data folder, as passed to site_xml here


#: write_conf keys that name the local host, its interpreter or its folders.
FLINK_HOST_KEYS = {"jobmanager.rpc.address", "jobmanager.bind-host", "taskmanager.bind-host", "taskmanager.host",
                   "rest.address", "rest.bind-address", "io.tmp.dirs"}
FLINK_PYTHON_KEYS = {"python.executable", "python.client.executable"}


def local_flink_conf(tmp_path: Path) -> dict[str, str]:
    from zhongtai.devtools.stack._proc import paths_of
    from zhongtai.devtools.stack.flink_cluster import write_conf

    s = load_settings(env={"ZT__STACK__RUN_DIR": str(tmp_path)})
    conf = write_conf(s, paths_of(s)) / "config.yaml"
    return flat(yaml.safe_load(conf.read_text()))


def test_flink_cluster_configuration_equals_the_local_cluster(tmp_path):
    local = local_flink_conf(tmp_path)
    docker = flat(yaml.safe_load((DOCKER / "flink-config.yaml").read_text()))
    diff = {k: (v, docker.get(k)) for k, v in local.items()
            if k not in FLINK_HOST_KEYS | FLINK_PYTHON_KEYS and docker.get(k) != v}
    assert diff == {}
    assert {docker[k] for k in FLINK_PYTHON_KEYS} == {IMAGE_PYTHON}
    assert docker["jobmanager.bind-host"] == docker["taskmanager.bind-host"] == docker["rest.bind-address"] == "0.0.0.0"
    assert docker["jobmanager.rpc.address"] == docker["rest.address"] == "flink-jobmanager"
    # the compose file's -D reporter options are checked in tests/unit/test_metrics_grafana.py


def test_negative_control_a_drifted_flink_key_is_found(tmp_path):
    local = local_flink_conf(tmp_path)
    docker = flat(yaml.safe_load((DOCKER / "flink-config.yaml").read_text()))
    docker["taskmanager.memory.process.size"] = "1600m"  # what the compose cluster had before
    del docker["classloader.parent-first-patterns.additional"]
    diff = {k for k, v in local.items() if k not in FLINK_HOST_KEYS | FLINK_PYTHON_KEYS and docker.get(k) != v}
    assert diff == {"taskmanager.memory.process.size", "classloader.parent-first-patterns.additional"}


# ==== the images ========================================================================================
def test_dockerfiles_copy_only_what_the_repository_has():
    for df in ("Dockerfile", "flink.Dockerfile", "hbase.Dockerfile"):
        for word, rest in dockerfile(DOCKER / df):
            if word == "COPY" and "--from=" not in rest:
                sources = [t for t in rest.split() if not t.startswith("--")][:-1]
                assert sources and all((ROOT / src).exists() for src in sources), (df, rest)
        assert (DOCKER / f"{df}.dockerignore").exists(), df


def test_the_flink_image_has_the_jars_and_the_layout_the_job_reads():
    from connectors.jvm import _cache_dir
    from zhongtai.devtools.stack.jars import lib_dir

    env = dockerfile_vars(DOCKER / "flink.Dockerfile", "ENV")
    assert env["FLINK_HOME"] == "/opt/flink" and env["PATH"].startswith("/opt/flink/bin:")
    image = load_settings(env={"ZT__STACK__HOME": env["ZT__STACK__HOME"]})
    runs = "\n".join(rest for word, rest in dockerfile(DOCKER / "flink.Dockerfile") if word == "RUN")
    # built and fetched by the project's own code (`python -m connectors.jvm`, ensure_jars) ...
    assert "python -m connectors.jvm" in runs and "ensure_jars(load_settings(), ('flink',))" in runs
    # ... into the folders it reads at run time, linked under stable names for the FlinkDeployment
    artifact = image.stack.flink_kafka_connector.split(":")[1]
    assert f"{lib_dir(image, 'flink')}/{artifact}-*.jar /opt/zhongtai/jars/flink-sql-connector-kafka.jar" in runs
    assert f"{_cache_dir(image)}/zhongtai-jvm-*.jar /opt/zhongtai/jars/zhongtai-jvm.jar" in runs
    # thread mode: flink-python on the cluster classpath (write_lib), the Python of the image
    assert '"$WHEEL"/opt/flink-python-*.jar' in runs and "cp /app/docker/flink-config.yaml /opt/flink/conf/config.yaml" in runs
    assert ("ENTRYPOINT", '["/docker-entrypoint.sh"]') in dockerfile(DOCKER / "flink.Dockerfile")


def test_entrypoint_scripts_are_executable_shell():
    for script in ("flink-entrypoint.sh", "hbase-entrypoint.sh"):
        mode = subprocess.run(["git", "ls-files", "-s", f"docker/{script}"], cwd=ROOT, capture_output=True,
                              text=True, check=True).stdout.split()
        assert mode and mode[0] == "100755", script
        subprocess.run(["bash", "-n", str(DOCKER / script)], check=True)


def test_bootstrap_creates_the_topic_layout_the_job_expects(monkeypatch):
    from connectors.store_log import store_log_topic
    from zhongtai.jobs import runner

    s = local_settings()
    layout = bootstrap_module().topic_layout(s)
    made: dict[str, int] = {}
    monkeypatch.setattr("zhongtai.devtools.stack.topics.create_topics",
                        lambda _s, names, partitions=None, **_: made.update(dict.fromkeys(names, partitions or 2)))
    runner.ensure_control_topics(s, s.kafka.topics.control, s.kafka.topics.control_results)
    assert {t: layout[t] for t in made} == made  # the control topic: one partition, as the job makes it
    assert layout[s.kafka.topics.control] == 1
    assert layout[store_log_topic(s)] == s.kafka.partitions  # the applier waits for it
    assert {f"{s.kafka.topics.actions_prefix}{c}" for c in CHANNELS} <= set(layout)  # the workers read them
    assert set(layout.values()) == {1, s.kafka.partitions}


# ==== deploy/k8s ========================================================================================
def kustomization() -> dict[str, Any]:
    return yaml.safe_load((K8S / "kustomization.yaml").read_text())


def generated_objects(secrets_file: str = "secrets.env.example") -> list[dict[str, Any]]:
    """The ConfigMap and Secret that kustomize's generators make (the real secrets.env is not committed)."""
    k = kustomization()
    out = []
    for gen in k["configMapGenerator"]:
        data = {}
        for spec in gen["files"]:
            key, _, file = spec.partition("=")
            data[key] = (K8S / (file or key)).read_text()
        out.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": gen["name"]}, "data": data})
    for gen in k["secretGenerator"]:
        assert gen["envs"] == ["secrets.env"]
        lines = (K8S / secrets_file).read_text().splitlines()
        data = dict(ln.split("=", 1) for ln in lines if ln.strip() and not ln.startswith("#"))
        out.append({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": gen["name"]}, "type": "Opaque",
                    "stringData": data})
    return out


@functools.cache
def _k8s_objects() -> tuple[dict[str, Any], ...]:
    docs = [d for f in kustomization()["resources"] for d in yaml.safe_load_all((K8S / f).read_text()) if d]
    return tuple(docs + generated_objects())


def k8s_objects() -> list[dict[str, Any]]:
    """Every object ``kubectl apply -k deploy/k8s`` creates (fresh copies: tests may change them)."""
    return copy.deepcopy(list(_k8s_objects()))


def by_kind(kind: str) -> list[dict[str, Any]]:
    return [o for o in k8s_objects() if o["kind"] == kind]


def k8s_error(obj: dict[str, Any], version: str) -> str | None:
    try:
        kubernetes_validate.validate(obj, version, strict=True)
    except kubernetes_validate.ValidationError as e:
        return f"{obj['kind']}/{obj['metadata'].get('name')}: {'.'.join(map(str, e.path))}: {e.message}"
    return None


def pod_specs() -> dict[str, dict[str, Any]]:
    """Every pod spec of the manifests (workloads and the FlinkDeployment's pod template)."""
    out = {f"{o['kind']}/{o['metadata']['name']}": o["spec"]["template"]["spec"]
           for o in k8s_objects() if o["kind"] in ("Deployment", "StatefulSet", "Job")}
    for fd in by_kind("FlinkDeployment"):
        out[f"FlinkDeployment/{fd['metadata']['name']}"] = fd["spec"]["podTemplate"]["spec"]
    return out


def test_kustomization_lists_every_manifest():
    k = kustomization()
    config_files = {"kustomization.yaml", "kustomizeconfig.yaml", "zhongtai.yaml", "contacts.yaml"}
    manifests = {p.name for p in K8S.glob("*.yaml")} - config_files
    assert sorted(k["resources"]) == sorted(manifests)
    assert k["namespace"] == "zhongtai" and k["configurations"] == ["kustomizeconfig.yaml"]
    assert k["generatorOptions"] == {"disableNameSuffixHash": True}  # names referenced from the FlinkDeployment
    assert {i["name"] for i in k["images"]} == {ZHONGTAI_IMAGE, FLINK_IMAGE}
    assert all(i["newTag"] == project_version() for i in k["images"])
    assert yaml.safe_load((K8S / "kustomizeconfig.yaml").read_text()) == {
        "images": [{"path": "spec/image", "kind": "FlinkDeployment"}]}
    ignored = subprocess.run(["git", "check-ignore", "-q", "deploy/k8s/secrets.env"], cwd=ROOT, check=False)
    assert ignored.returncode == 0, "deploy/k8s/secrets.env (the real secrets) must be git-ignored"


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_kubernetes_objects_validate_against_the_kubernetes_schemas(version):
    core = [o for o in k8s_objects() if o["kind"] != "FlinkDeployment"]
    assert {o["kind"] for o in core} == {"Namespace", "ServiceAccount", "Role", "RoleBinding", "PersistentVolumeClaim",
                                         "Job", "Deployment", "StatefulSet", "Service", "ConfigMap", "Secret"}
    assert [k8s_error(o, version) for o in core] == [None] * len(core)
    # the FlinkDeployment's pod template is a Pod to Kubernetes (the operator merges it into its pods)
    for fd in by_kind("FlinkDeployment"):
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "template"}, **fd["spec"]["podTemplate"]}
        assert k8s_error(pod, version) is None


def test_negative_control_kubernetes_validation_rejects_broken_objects():
    version = K8S_VERSIONS[-1]
    deployment = copy.deepcopy(next(o for o in by_kind("Deployment") if o["metadata"]["name"] == "zhongtai-api"))
    wrong_type = copy.deepcopy(deployment)
    wrong_type["spec"]["replicas"] = "two"
    unknown = copy.deepcopy(deployment)
    unknown["spec"]["template"]["spec"]["containers"][0]["volumeMount"] = []
    port = copy.deepcopy(deployment)
    port["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "http"
    for broken in (wrong_type, unknown, port):
        assert k8s_error(broken, version) is not None
    template = copy.deepcopy(by_kind("FlinkDeployment")[0]["spec"]["podTemplate"])
    template["spec"]["containers"][0]["envFrom"][0]["secretRef"]["nam"] = "x"
    assert k8s_error({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "t"}, **template}, version) is not None


# ---- the FlinkDeployment against the operator's CRD ----------------------------------------------------
#: Flink 2.x values of spec.flinkVersion, which operator releases after the vendored 1.10.0 added.
FLINK_2_VERSIONS = ["v2_0", "v2_1", "v2_2", "v2_3"]


@functools.cache
def _crd_schema() -> dict[str, Any]:
    text = (DATA / "flink-kubernetes-operator" / "flinkdeployments.flink.apache.org-v1.yml").read_text()
    crd = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # 0.5 MB: libyaml when there
    assert crd["kind"] == "CustomResourceDefinition" and crd["spec"]["names"]["kind"] == "FlinkDeployment"
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1beta1")
    return version["schema"]["openAPIV3Schema"]


def vendored_crd_schema() -> dict[str, Any]:
    return copy.deepcopy(_crd_schema())


def patched_crd_schema() -> dict[str, Any]:
    schema = copy.deepcopy(vendored_crd_schema())
    schema["properties"]["spec"]["properties"]["flinkVersion"]["enum"] += FLINK_2_VERSIONS
    return schema


def strict(node: Any) -> Any:
    """The API server's strict field validation as JSON Schema: an object schema with ``properties`` and
    no ``additionalProperties`` (nor x-kubernetes-preserve-unknown-fields) accepts no other field."""
    if isinstance(node, list):
        return [strict(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: ({name: strict(s) for name, s in v.items()} if k == "properties" else strict(v)) for k, v in node.items()}
    if "properties" in node and "additionalProperties" not in node and not node.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False
    return out


def flinkdeployment_errors(obj: dict[str, Any], crd_schema: dict[str, Any] | None = None) -> list[str]:
    schema = strict(crd_schema or patched_crd_schema())
    schema["properties"] |= {
        "apiVersion": {"const": "flink.apache.org/v1beta1"},
        "kind": {"const": "FlinkDeployment"},
        "metadata": {"type": "object", "required": ["name"], "additionalProperties": False, "properties": {
            "name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 45},
            "namespace": {"type": "string"},
            "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            "annotations": {"type": "object", "additionalProperties": {"type": "string"}}}},
    }
    schema["required"] = ["apiVersion", "kind", "metadata", "spec"]
    validator = jsonschema.Draft7Validator(schema)
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(obj)]


def test_the_crd_patch_only_adds_flink_2_versions():
    vendored, patched = vendored_crd_schema(), patched_crd_schema()
    before = vendored["properties"]["spec"]["properties"]["flinkVersion"]["enum"]
    assert before[-1] == "v1_20" and not set(before) & set(FLINK_2_VERSIONS)
    patched["properties"]["spec"]["properties"]["flinkVersion"]["enum"] = before
    assert patched == vendored


def test_flinkdeployment_validates_against_the_operators_crd():
    deployments = by_kind("FlinkDeployment")
    assert len(deployments) == 1
    assert flinkdeployment_errors(deployments[0]) == []
    major, minor = flink_version().split(".")[:2]
    assert deployments[0]["spec"]["flinkVersion"] == f"v{major}_{minor}"


def test_negative_control_the_crd_rejects_broken_flinkdeployments():
    good = by_kind("FlinkDeployment")[0]
    assert any("flinkVersion" in e for e in flinkdeployment_errors(good, vendored_crd_schema()))  # v2_3 unknown to 1.10
    typo = copy.deepcopy(good)
    typo["spec"]["jobManger"] = typo["spec"].pop("jobManager")
    mode = copy.deepcopy(good)
    mode["spec"]["job"]["upgradeMode"] = "latest"
    args = copy.deepcopy(good)
    args["spec"]["job"]["args"] = " ".join(args["spec"]["job"]["args"])
    conf = copy.deepcopy(good)
    conf["spec"]["flinkConfiguration"]["taskmanager.numberOfTaskSlots"] = 2
    pod = copy.deepcopy(good)
    pod["spec"]["podTemplate"]["spec"]["containers"][0]["volumeMount"] = []
    for broken, where in ((typo, "jobManger"), (mode, "spec.job.upgradeMode"), (args, "spec.job.args"),
                          (conf, "spec.flinkConfiguration"), (pod, "volumeMount")):
        assert any(where in e for e in flinkdeployment_errors(broken)), where


# ---- the manifests against the project -----------------------------------------------------------------
def k8s_settings() -> Settings:
    secrets = next(o for o in generated_objects() if o["kind"] == "Secret")["stringData"]
    return load_settings(K8S / "zhongtai.yaml", env=secrets)


def test_the_cluster_configuration_loads():
    s = k8s_settings()  # config.settings rejects unknown keys and bad values
    assert s.flink.mode == "cluster" and s.flink.rest_url == "http://zhongtai-events-rest:8081"
    assert s.pii.hmac_secret.get_secret_value().startswith("REPLACE-ME") and s.api.token is not None
    local = local_settings()
    assert (s.redis.port, s.hbase.port, s.api.port, s.kafka.partitions) == \
        (local.redis.port, local.hbase.port, local.api.port, local.kafka.partitions)
    assert yaml.safe_load((K8S / "contacts.yaml").read_text()) == {}


def test_every_container_runs_a_real_command_with_the_mounted_config():
    configmaps = {o["metadata"]["name"] for o in by_kind("ConfigMap")}
    secrets = {o["metadata"]["name"] for o in by_kind("Secret")}
    claims = {o["metadata"]["name"] for o in by_kind("PersistentVolumeClaim")}
    config = next(o for o in by_kind("ConfigMap") if o["metadata"]["name"] == "zhongtai-config")
    assert k8s_settings().worker.contacts.path == "/etc/zhongtai/contacts.yaml" and "contacts.yaml" in config["data"]
    for name, pod in pod_specs().items():
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        for v in volumes.values():
            assert v.get("configMap", {}).get("name", next(iter(configmaps))) in configmaps, name
            assert v.get("persistentVolumeClaim", {}).get("claimName", next(iter(claims))) in claims, name
        for c in pod["containers"]:
            assert [e["secretRef"]["name"] for e in c["envFrom"]] == ["zhongtai-secrets"] and secrets == {"zhongtai-secrets"}
            mounts = {m["mountPath"]: volumes[m["name"]] for m in c.get("volumeMounts", [])}
            assert mounts["/etc/zhongtai"]["configMap"]["name"] == "zhongtai-config", name
            if name.startswith("FlinkDeployment/"):
                continue
            assert command_error(c["command"]) is None, (name, command_error(c["command"]))
            assert option(c["command"], "--config") == "/etc/zhongtai/config.yaml", name
            assert c["image"] == f"{ZHONGTAI_IMAGE}:{project_version()}", name
    workers = {option(c["command"], "--channel"): c for o in by_kind("StatefulSet")
               for c in o["spec"]["template"]["spec"]["containers"]}
    assert sorted(workers) == sorted(CHANNELS)
    for c in workers.values():  # a stable instance per pod: the StatefulSet's pod name
        assert option(c["command"], "--instance") == "$(POD_NAME)"
        assert c["env"] == [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]
    sa = {o["metadata"]["name"] for o in by_kind("ServiceAccount")}
    assert by_kind("FlinkDeployment")[0]["spec"]["serviceAccount"] in sa
    assert by_kind("RoleBinding")[0]["subjects"][0]["name"] in sa


def test_services_select_pods_and_their_ports():
    from zhongtai.cli import build_parser

    workloads = [o for o in k8s_objects() if o["kind"] in ("Deployment", "StatefulSet")]
    dashboard_port = subparsers(build_parser())["dashboard"].get_default("port")
    want = {"zhongtai-api": k8s_settings().api.port, "zhongtai-dashboard": dashboard_port, "zhongtai-applier": 9300,
            **{f"zhongtai-worker-{c}": 9310 for c in CHANNELS}}
    services = {o["metadata"]["name"]: o for o in by_kind("Service")}
    assert sorted(services) == sorted(want)
    for name, svc in services.items():
        selected = [w for w in workloads if svc["spec"]["selector"].items() <= w["spec"]["template"]["metadata"]["labels"].items()]
        assert len(selected) == 1, name
        w = selected[0]
        assert w["spec"]["selector"]["matchLabels"].items() <= w["spec"]["template"]["metadata"]["labels"].items()
        container = w["spec"]["template"]["spec"]["containers"][0]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        for p in svc["spec"]["ports"]:
            assert p["port"] == ports[p["targetPort"]] == want[name], name
        cmd = container["command"]
        assert int(option(cmd, "--metrics-port") if "--metrics-port" in cmd else option(cmd, "--port")) == want[name]
        if w["kind"] == "StatefulSet":
            assert w["spec"]["serviceName"] == name and svc["spec"]["clusterIP"] == "None"


#: What a supervisor does when a worker exits: restarts it (a stuck Kafka commit ends a worker with exit code 75,
#: a service away too long with 1: docs/workers.md, "When a service goes away").
COMPOSE_RESTARTS = ("always", "unless-stopped", "on-failure")


def unrestarted_workers(compose_doc: dict[str, Any], objects: list[dict[str, Any]]) -> list[str]:
    """The worker definitions of Compose and Kubernetes that nothing starts again when the process exits."""
    bad = [f"compose/{name}" for name, svc in compose_doc["services"].items()
           if name.startswith("worker-") and svc.get("restart", "no") not in COMPOSE_RESTARTS]
    bad += [f"k8s/{o['metadata']['name']}" for o in objects
            if o["kind"] in ("StatefulSet", "Deployment") and o["metadata"]["name"].startswith("zhongtai-worker-")
            and o["spec"]["template"]["spec"].get("restartPolicy", "Always") != "Always"]
    return sorted(bad)


def test_every_worker_is_started_again_when_it_exits():
    doc, objects = compose(), k8s_objects()
    assert sorted(n for n in doc["services"] if n.startswith("worker-")) == sorted(f"worker-{c}" for c in CHANNELS)
    assert sorted(o["metadata"]["name"] for o in by_kind("StatefulSet")) == sorted(f"zhongtai-worker-{c}" for c in CHANNELS)
    assert unrestarted_workers(doc, objects) == []


def test_negative_control_a_worker_that_is_not_restarted_is_found():
    doc, objects = compose(), k8s_objects()
    doc["services"]["worker-sms"]["restart"] = "no"
    del doc["services"]["worker-email"]["restart"]
    push = next(o for o in objects if o["metadata"]["name"] == "zhongtai-worker-push")
    push["spec"]["template"]["spec"]["restartPolicy"] = "Never"
    assert unrestarted_workers(doc, objects) == ["compose/worker-email", "compose/worker-sms", "k8s/zhongtai-worker-push"]


def test_flinkdeployment_runs_job_main_as_zhongtai_submit_does(tmp_path):
    from zhongtai.devtools.stack.flink_cluster import JM_HEAP, TM_PROCESS
    from zhongtai.jobs.job_main import build_parser
    from zhongtai.jobs.metrics import flink_prometheus_options

    fd = by_kind("FlinkDeployment")[0]
    spec, conf, s = fd["spec"], fd["spec"]["flinkConfiguration"], k8s_settings()
    job = spec["job"]
    assert fd["metadata"]["name"] == s.flink.job_name and spec["image"] == f"{FLINK_IMAGE}:{project_version()}"
    assert (job["entryClass"], job["upgradeMode"], job["state"]) == (
        "org.apache.flink.client.python.PythonDriver", "savepoint", "running")
    # the placeholder jar is the wheel's flink-python jar, at /opt/flink/opt in the image
    wheel_opt = Path(__import__("pyflink").__file__).parent / "opt"
    assert job["jarURI"] == f"local:///opt/flink/opt/flink-python-{flink_version()}.jar"
    assert (wheel_opt / f"flink-python-{flink_version()}.jar").exists()
    # -py <job_main> then job_main's own options: --config first (the Flink CLI rule), all accepted
    args = job["args"]
    assert args[:2] == ["-py", "/app/zhongtai/jobs/job_main.py"] and (ROOT / "zhongtai" / "jobs" / "job_main.py").exists()
    assert args[2] == "--config" and argv_error(build_parser(), args[2:]) is None
    parsed = build_parser().parse_args(args[2:])
    assert parsed.config == "/etc/zhongtai/config.yaml" and parsed.fresh  # the operator restores, not job_main
    assert parsed.jars.split(";") == ["file:///opt/zhongtai/jars/flink-sql-connector-kafka.jar",
                                      "file:///opt/zhongtai/jars/zhongtai-jvm.jar"]
    assert job["parallelism"] == s.flink.parallelism
    # state on the mounted volume, where the job itself writes its checkpoints
    assert conf["execution.checkpointing.dir"] == f"{s.checkpoint_url()}/{s.flink.job_name}"
    for key in ("execution.checkpointing.dir", "execution.checkpointing.savepoint-dir", "high-availability.storageDir"):
        assert conf[key].startswith("file:///flink-data/"), key
    mounts = spec["podTemplate"]["spec"]["containers"][0]["volumeMounts"]
    assert {"name": "flink-data", "mountPath": "/flink-data"} in mounts
    # the local cluster's settings (write_conf), except what names hosts and what the operator derives
    local = local_flink_conf(tmp_path)
    derived = {"jobmanager.memory.process.size": spec["jobManager"]["resource"]["memory"],
               "taskmanager.memory.process.size": spec["taskManager"]["resource"]["memory"],
               "parallelism.default": str(job["parallelism"])}
    assert derived == {"jobmanager.memory.process.size": JM_HEAP, "taskmanager.memory.process.size": TM_PROCESS,
                       "parallelism.default": str(s.flink.parallelism)}
    missing = {k: (v, conf.get(k)) for k, v in local.items()
               if k not in FLINK_HOST_KEYS | FLINK_PYTHON_KEYS | set(derived) and conf.get(k) != v}
    assert missing == {}
    assert {conf[k] for k in FLINK_PYTHON_KEYS} == {IMAGE_PYTHON}
    # Prometheus: the reporter options of zhongtai.jobs.metrics on 9249, a named port, scrape annotations
    reporter = {k: v for k, v in conf.items() if k.startswith("metrics.reporter.")}
    assert reporter == flink_prometheus_options(load_settings(env={"ZT__FLINK__MODE": "cluster"}), ports="9249")
    pod = spec["podTemplate"]
    assert {"name": "metrics", "containerPort": 9249} in pod["spec"]["containers"][0]["ports"]
    assert pod["metadata"]["annotations"] == {"prometheus.io/scrape": "true", "prometheus.io/port": "9249"}
    assert pod["spec"]["securityContext"]["runAsUser"] == 9999  # the image's flink user


def test_negative_control_a_job_main_option_it_does_not_know_is_found():
    from zhongtai.jobs.job_main import build_parser

    args = [*by_kind("FlinkDeployment")[0]["spec"]["job"]["args"][2:], "--no-such-option", "x"]
    assert "unrecognized arguments" in argv_error(build_parser(), args)


# ==== deploy/k8s-overlays/example-namespace: a second, isolated copy =====================================
OVERLAY = ROOT / "deploy" / "k8s-overlays" / "example-namespace"
#: Kinds without a namespace (kustomize's namespace transformer renames a Namespace instead).
CLUSTER_SCOPED = {"Namespace"}


def json_patch(obj: dict[str, Any], ops: list[dict[str, Any]], where: str) -> None:
    """RFC 6902 ``add`` (``-``: append) and ``replace`` on ``obj``, in place; a path that does not exist fails,
    as it fails kustomize."""
    for op in ops:
        *parents, last = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]]
        node: Any = obj
        for p in parents:
            node = node[int(p)] if isinstance(node, list) else node[p]
        assert op["op"] in ("add", "replace"), f"{where}: op {op['op']} is not rendered here"
        if isinstance(node, list):
            if last == "-" and op["op"] == "add":
                node.append(copy.deepcopy(op["value"]))
            else:
                node[int(last)] = copy.deepcopy(op["value"])
        else:
            assert op["op"] == "add" or last in node, f"{where}: {op['path']} does not exist"
            node[last] = copy.deepcopy(op["value"])


def render_overlay(folder: Path = OVERLAY) -> list[dict[str, Any]]:
    """What ``kubectl apply -k <folder>`` creates, rendered as kustomize does for the features the overlay uses
    (the base, ``configMapGenerator`` literals, JSON patches by kind, ``namespace``); anything else fails here, so
    that a new feature in the overlay needs a renderer here too (and ``kubectl kustomize`` checks this one)."""
    k = yaml.safe_load((folder / "kustomization.yaml").read_text())
    known = {"apiVersion", "kind", "namespace", "resources", "configMapGenerator", "generatorOptions", "patches"}
    assert set(k) <= known, f"{folder.name}/kustomization.yaml: {sorted(set(k) - known)} are not rendered here"
    assert [(folder / r).resolve() for r in k["resources"]] == [K8S.resolve()], "the one resource is the base"
    assert k["generatorOptions"] == {"disableNameSuffixHash": True}
    objects = k8s_objects()
    for gen in k["configMapGenerator"]:
        assert set(gen) == {"name", "literals"}, gen
        data = dict(lit.split("=", 1) for lit in gen["literals"])
        objects.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": gen["name"]}, "data": data})
    for patch in k["patches"]:
        assert set(patch) == {"path", "target"} and set(patch["target"]) <= {"kind", "name"}, patch
        ops = yaml.safe_load((folder / patch["path"]).read_text())
        targets = [o for o in objects if o["kind"] == patch["target"]["kind"]
                   and patch["target"].get("name", o["metadata"]["name"]) == o["metadata"]["name"]]
        assert targets, f"patch {patch['path']}: no {patch['target']}"
        for o in targets:
            json_patch(o, ops, f"{patch['path']} on {o['kind']}/{o['metadata']['name']}")
    for o in objects:
        if o["kind"] == "Namespace":
            o["metadata"]["name"] = k["namespace"]
            continue
        o["metadata"]["namespace"] = k["namespace"]
        if o["kind"] == "RoleBinding":
            for subject in o["subjects"]:
                if subject["kind"] == "ServiceAccount":
                    subject["namespace"] = k["namespace"]
    return objects


@functools.cache
def _overlay_objects() -> tuple[dict[str, Any], ...]:
    return tuple(render_overlay())


def overlay_objects() -> list[dict[str, Any]]:
    return copy.deepcopy(list(_overlay_objects()))


def overlay_settings(objects: list[dict[str, Any]]) -> Settings:
    """The settings every pod of the overlay loads: zhongtai.yaml with the Secret's and the ConfigMaps' env."""
    env: dict[str, str] = {}
    for o in objects:
        if o["kind"] == "Secret":
            env |= o["stringData"]
        elif o["kind"] == "ConfigMap" and o["metadata"]["name"] != "zhongtai-config":
            env |= o["data"]
    return load_settings(K8S / "zhongtai.yaml", env=env)


def unisolated(objects: list[dict[str, Any]]) -> list[str]:
    """Objects of the overlay outside its Kubernetes namespace, and containers that do not get its zhongtai
    namespace (``envFrom`` the ConfigMap that holds ``ZT__NAMESPACE``)."""
    namespace = next(o["metadata"]["name"] for o in objects if o["kind"] == "Namespace")
    holders = {o["metadata"]["name"] for o in objects if o["kind"] == "ConfigMap" and "ZT__NAMESPACE" in o["data"]}
    bad = [f"{o['kind']}/{o['metadata']['name']}: namespace {o['metadata'].get('namespace')}" for o in objects
           if o["kind"] not in CLUSTER_SCOPED and o["metadata"].get("namespace") != namespace]
    pods = {f"{o['kind']}/{o['metadata']['name']}": o["spec"]["template"]["spec"]
            for o in objects if o["kind"] in ("Deployment", "StatefulSet", "Job")}
    pods |= {f"FlinkDeployment/{o['metadata']['name']}": o["spec"]["podTemplate"]["spec"]
             for o in objects if o["kind"] == "FlinkDeployment"}
    for name, pod in pods.items():
        for c in pod["containers"]:
            refs = {e["configMapRef"]["name"] for e in c.get("envFrom", []) if "configMapRef" in e}
            if not refs & holders:
                bad.append(f"{name}: container {c['name']} has no ZT__NAMESPACE")
    return sorted(bad)


def kustomize_built(tmp_path: Path) -> list[dict[str, Any]]:
    """``kubectl kustomize`` (or ``kustomize build``) of the overlay on a copy of deploy/ with the example
    secrets; skips the test where neither is installed (the other tests use ``render_overlay``)."""
    import base64
    import shutil

    tool = shutil.which("kustomize") or shutil.which("kubectl")
    if tool is None:
        pytest.skip("neither kustomize nor kubectl is installed: the overlay is checked as render_overlay builds it")
    shutil.copytree(ROOT / "deploy", tmp_path / "deploy")
    shutil.copy(K8S / "secrets.env.example", tmp_path / "deploy" / "k8s" / "secrets.env")
    folder = str(tmp_path / "deploy" / OVERLAY.relative_to(ROOT / "deploy"))
    argv = [tool, "build", folder] if tool.endswith("kustomize") else [tool, "kustomize", folder]
    built = [d for d in yaml.safe_load_all(subprocess.run(argv, check=True, capture_output=True, text=True).stdout) if d]
    for o in built:
        if o["kind"] == "Secret":  # the generator encodes; render_overlay keeps the text
            o["stringData"] = {k: base64.b64decode(v).decode() for k, v in o.pop("data").items()}
    return built


def differences(built: list[dict[str, Any]], rendered: list[dict[str, Any]]) -> list[str]:
    """``kind/name`` of the objects that only one side has or that differ."""
    a = {f"{o['kind']}/{o['metadata']['name']}": o for o in built}
    b = {f"{o['kind']}/{o['metadata']['name']}": o for o in rendered}
    return sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))


def test_the_overlay_renders_as_kustomize_does(tmp_path):
    built = kustomize_built(tmp_path)
    assert len(built) == len(overlay_objects()) == len(k8s_objects()) + 1
    assert differences(built, overlay_objects()) == []


def test_negative_control_a_renderer_that_forgets_a_transformation_differs_from_kustomize(tmp_path):
    built, mine = kustomize_built(tmp_path), overlay_objects()
    next(o for o in mine if o["kind"] == "RoleBinding")["subjects"][0].pop("namespace")
    next(o for o in mine if o["kind"] == "FlinkDeployment")["spec"]["podTemplate"]["spec"]["containers"][0]["envFrom"].pop()
    assert differences(built, mine) == ["FlinkDeployment/zhongtai-events", "RoleBinding/flink"]


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_the_overlay_validates_against_the_kubernetes_schemas_and_the_crd(version):
    objects = overlay_objects()
    core = [o for o in objects if o["kind"] != "FlinkDeployment"]
    assert [k8s_error(o, version) for o in core] == [None] * len(core)
    fds = [o for o in objects if o["kind"] == "FlinkDeployment"]
    assert len(fds) == 1 and flinkdeployment_errors(fds[0]) == []
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "template"}, **fds[0]["spec"]["podTemplate"]}
    assert k8s_error(pod, version) is None


def test_the_overlay_is_a_second_copy_that_shares_no_name_with_the_base():
    from zhongtai.names import shared_names

    objects = overlay_objects()
    assert unisolated(objects) == []
    base_ns = kustomization()["namespace"]
    namespace = next(o["metadata"]["name"] for o in objects if o["kind"] == "Namespace")
    assert namespace != base_ns and namespace == yaml.safe_load((OVERLAY / "kustomization.yaml").read_text())["namespace"]
    # every object of the base, and the one ConfigMap more, in the new namespace
    assert sorted((o["kind"], o["metadata"]["name"]) for o in objects) == sorted(
        [(o["kind"], o["metadata"]["name"] if o["kind"] != "Namespace" else namespace) for o in k8s_objects()]
        + [("ConfigMap", "zhongtai-namespace")])
    # the zhongtai settings of its pods: the namespace, every shared name different from the base's
    s, base = overlay_settings(objects), k8s_settings()
    assert s.namespace == "staging" and base.namespace == ""
    mine, theirs = shared_names(s), shared_names(base)
    assert set(mine) == set(theirs)
    assert {role: name for role, name in mine.items() if name == theirs[role]} == {}
    assert all(name.startswith(("staging.", "staging\\.")) or "/staging." in name for name in mine.values()), mine
    # the job's state folders: where job_main (with ZT__NAMESPACE) writes them, apart from the base's
    fd = next(o for o in objects if o["kind"] == "FlinkDeployment")
    conf, base_conf = fd["spec"]["flinkConfiguration"], by_kind("FlinkDeployment")[0]["spec"]["flinkConfiguration"]
    assert conf["execution.checkpointing.dir"] == mine["flink.checkpoints"]
    folders = ("execution.checkpointing.dir", "execution.checkpointing.savepoint-dir", "high-availability.storageDir")
    assert [k for k in folders if conf[k] == base_conf[k] or not conf[k].startswith("file:///flink-data/")] == []
    assert {k: v for k, v in conf.items() if base_conf.get(k) != v} == {k: conf[k] for k in folders}
    # its REST service (the operator names it <FlinkDeployment>-rest) is the one the pods' settings call
    assert s.flink.rest_url == f"http://{fd['metadata']['name']}-rest:8081"


def test_negative_control_a_component_left_out_of_the_namespace_is_found():
    objects = overlay_objects()
    init = next(o for o in objects if o["kind"] == "Job")
    init["spec"]["template"]["spec"]["containers"][0]["envFrom"] = [{"secretRef": {"name": "zhongtai-secrets"}}]
    api = next(o for o in objects if o["metadata"]["name"] == "zhongtai-api")
    del api["metadata"]["namespace"]
    assert unisolated(objects) == ["Deployment/zhongtai-api: namespace None",
                                   "Job/zhongtai-init: container init has no ZT__NAMESPACE"]
    # and a patch path that the base does not have fails the rendering, as it fails kustomize
    with pytest.raises(AssertionError, match="does not exist"):
        json_patch({"spec": {}}, [{"op": "replace", "path": "/spec/replicas", "value": 2}], "test")


def test_negative_control_an_invalid_zhongtai_namespace_is_refused():
    from config.settings import ConfigError

    objects = overlay_objects()
    next(o for o in objects if o["metadata"]["name"] == "zhongtai-namespace")["data"]["ZT__NAMESPACE"] = "Staging_1"
    with pytest.raises(ConfigError, match="namespace 'Staging_1' is not allowed"):
        overlay_settings(objects)
