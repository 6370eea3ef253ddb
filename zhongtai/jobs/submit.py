"""Submit the event job to a Flink cluster (``settings.flink.rest_url``) and watch it over REST.

    job_id = submit(settings, drain=True, group="g1", redis_prefix="zt")  # detached by default
    wait_finished(settings, job_id, timeout=300)
    cancel(settings, job_id)

``submit`` runs the wheel's ``flink`` CLI (``zhongtai.devtools.stack.flink_cli``)::

    flink run -m HOST:PORT -d -py zhongtai/jobs/job_main.py -pyexec <python> -pyclientexec <python>
              -pyfs <packages zip> --settings-file <json> [job options]

* The settings travel as a JSON file (secrets included, so mode 0600, deleted once the client
  has read them), with ``stack.run_dir``/``stack.home`` made absolute: the client runs
  ``job_main.py`` from a working directory of its own.
* ``-pyfs`` ships the project's package folders (``zhongtai``, ``pipelines``, ``operators``,
  ``state``, ``connectors``, ``config``) as one zip (``package_zip``): each worker puts the
  extracted copy first on ``PYTHONPATH``, so the job runs the code that was submitted, also on a
  cluster without the project installed.
  ``-pyexec`` must be an interpreter with the dependencies (here the venv's, which also has the
  editable install as a fallback).
* The Kafka connector jar goes to ``pipeline.jars`` (``job_main --jars``); the client uploads it
  with the job graph.

Only the standard library talks to the REST API (urllib); no new dependencies.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
import zipfile
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

if TYPE_CHECKING:  # pragma: no cover
    from config.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
JOB_MAIN = Path(__file__).resolve().with_name("job_main.py")
#: Top-level packages the job imports on the workers (pyproject's packages.find include list).
PACKAGES = ("zhongtai", "pipelines", "operators", "state", "connectors", "config")
TERMINAL_STATES = frozenset({"FINISHED", "FAILED", "CANCELED", "SUSPENDED"})

_JOB_ID = re.compile(r"(?:zhongtai-job-id:|JobID)\s+([0-9a-f]{32})")


class SubmitError(RuntimeError):
    """Submitting or watching a Flink job failed; the message names the command and the log to read."""


# ---- REST -------------------------------------------------------------------------------------
def rest(settings: Settings, path: str, method: str = "GET", timeout: float = 10.0, body: Any = None) -> Any:
    url = settings.flink.rest_url.rstrip("/") + path
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, method=method, data=data,
                                 headers={"Content-Type": "application/json"} if data is not None else {})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        body = r.read()
    return json.loads(body) if body else None


def job_details(settings: Settings, job_id: str) -> dict[str, Any]:
    return rest(settings, f"/jobs/{job_id}")


def job_state(settings: Settings, job_id: str) -> str:
    return str(job_details(settings, job_id)["state"])


def job_exceptions(settings: Settings, job_id: str) -> str:
    """Root exception of the job (or the newest one in its history), for error messages."""
    try:
        ex = rest(settings, f"/jobs/{job_id}/exceptions?maxExceptions=5")
    except (OSError, urllib.error.URLError, ValueError) as e:
        return f"(no exceptions from REST: {e})"
    hist = ex.get("exceptionHistory", {}).get("entries") or []
    text = ex.get("root-exception") or (hist[0].get("stacktrace") if hist else None) or ""
    return text[:4000] if text else "(no exception recorded)"


def checkpoints(settings: Settings, job_id: str) -> dict[str, Any]:
    return rest(settings, f"/jobs/{job_id}/checkpoints")


def wait_state(
    settings: Settings, job_id: str, states: set[str] | frozenset[str], timeout: float, poll_s: float = 0.5
) -> str:
    """Poll until the job is in one of ``states`` (or any terminal state); return the state."""
    deadline = time.monotonic() + timeout
    state = "?"
    while True:
        try:
            state = job_state(settings, job_id)
        except (OSError, urllib.error.URLError) as e:  # REST briefly unavailable
            state = f"unreachable ({e})"
        if state in states or state in TERMINAL_STATES:
            return state
        if time.monotonic() > deadline:
            raise SubmitError(
                f"job {job_id} still {state} after {timeout:.0f} s (waited for {sorted(states)})"
            )
        time.sleep(poll_s)


def wait_finished(settings: Settings, job_id: str, timeout: float = 600.0) -> None:
    """Block until the job is FINISHED; raise :class:`SubmitError` (with its exception) otherwise."""
    state = wait_state(settings, job_id, {"FINISHED"}, timeout)
    if state != "FINISHED":
        raise SubmitError(f"job {job_id} ended {state}, not FINISHED:\n{job_exceptions(settings, job_id)}")


def cancel(settings: Settings, job_id: str, timeout: float = 60.0) -> str:
    """Cancel the job (no-op when it already ended); wait until it is terminal; return its state."""
    try:
        state = job_state(settings, job_id)
    except urllib.error.HTTPError as e:
        if e.code == 404:
            return "UNKNOWN"
        raise
    if state in TERMINAL_STATES:
        return state
    try:
        rest(settings, f"/jobs/{job_id}?mode=cancel", method="PATCH")
    except urllib.error.HTTPError as e:
        if e.code not in (404, 409):
            raise
    return wait_state(settings, job_id, TERMINAL_STATES, timeout)


def running_jobs(settings: Settings) -> list[dict[str, Any]]:
    """The cluster's jobs that have not ended: ``{"jid", "name", "state", ...}`` (REST ``/jobs/overview``)."""
    return [j for j in rest(settings, "/jobs/overview")["jobs"] if j["state"] not in TERMINAL_STATES]


def find_job(settings: Settings, job: str | None) -> str:
    """The id of the one running job named ``job`` (or with that id; ``None``: the one running job).
    Raises :class:`SubmitError` naming the running jobs when there is none or more than one."""
    jobs = running_jobs(settings)
    hits = jobs if job is None else [j for j in jobs if job in (j["jid"], j["name"])]
    if len(hits) == 1:
        return str(hits[0]["jid"])
    shown = ", ".join(f"{j['name']} ({j['jid']}, {j['state']})" for j in jobs) or "none"
    what = "a running job" if job is None else f"a running job named or with the id {job!r}"
    why = "several match: name one with --job ID" if hits else "there is none"
    raise SubmitError(f"looked for {what} on {settings.flink.rest_url}: {why}. Running jobs: {shown}")


def stop_with_savepoint(settings: Settings, job_id: str, directory: str, *, drain: bool = False,
                        timeout: float = 600.0, poll_s: float = 0.5) -> str:
    """Stop the job with a savepoint in ``directory`` (REST ``POST /jobs/<id>/stop``, then poll the trigger)
    and return the savepoint's path once the job has FINISHED. ``drain`` advances the event time to its end
    first (every event-time timer fires): for a job that will not be resumed. The savepoint is in the
    canonical format (portable between state backends); the sinks commit with it."""
    trigger = rest(settings, f"/jobs/{job_id}/stop", method="POST",
                   body={"targetDirectory": directory, "drain": drain, "formatType": "CANONICAL"})["request-id"]
    deadline = time.monotonic() + timeout
    while True:
        got = rest(settings, f"/jobs/{job_id}/savepoints/{trigger}")
        if got["status"]["id"] == "COMPLETED":
            op = got.get("operation") or {}
            if "location" not in op:
                cause = (op.get("failure-cause") or {}).get("stacktrace", str(op))
                raise SubmitError(f"stop-with-savepoint of job {job_id} into {directory} failed "
                                  f"(the job keeps running):\n{cause[:3000]}")
            # Flink completes the stop once the job has terminated; an embedded mini-cluster serving this REST
            # API may be gone with its job by now (nothing left to ask)
            try:
                state = job_state(settings, job_id)
            except (OSError, urllib.error.URLError):
                return str(op["location"])
            if state not in TERMINAL_STATES:
                state = wait_state(settings, job_id, TERMINAL_STATES, max(5.0, deadline - time.monotonic()))
            if state != "FINISHED":
                raise SubmitError(f"job {job_id} ended {state} after its savepoint {op['location']}:\n"
                                  f"{job_exceptions(settings, job_id)}")
            return str(op["location"])
        if time.monotonic() > deadline:
            raise SubmitError(f"stop-with-savepoint of job {job_id} not done after {timeout:.0f} s "
                              f"(trigger {trigger}); see the job's checkpoints in the Flink UI")
        time.sleep(poll_s)


# ---- flink run --------------------------------------------------------------------------------
def _host_port(settings: Settings) -> str:
    u = urlparse(settings.flink.rest_url)
    return f"{u.hostname or '127.0.0.1'}:{u.port or 8081}"


def package_dirs() -> list[Path]:
    return [ROOT / p for p in PACKAGES if (ROOT / p / "__init__.py").exists()]


def package_zip(folder: Path) -> Path:
    """The project's packages as one zip (``zhongtai/…``, ``pipelines/…`` at its top level).

    A ``.zip`` given to ``-pyfs`` is extracted and *its folder* goes on the workers' PYTHONPATH, so
    ``import zhongtai`` finds the shipped copy. (A plain folder given to ``-pyfs`` is put on
    PYTHONPATH itself: its *contents* become importable, not the package.) Content-addressed, so an
    unchanged tree reuses the same file; kept after submission (a week) because a job may read it
    again when it is resubmitted or restored.
    """
    entries: list[tuple[str, bytes]] = []
    for pkg in package_dirs():
        for f in sorted(pkg.rglob("*")):
            if f.is_file() and "__pycache__" not in f.parts and f.suffix not in (".pyc", ".pyo"):
                entries.append((f.relative_to(ROOT).as_posix(), f.read_bytes()))
    digest = hashlib.sha1()
    for name, data in entries:
        digest.update(name.encode() + b"\0" + hashlib.sha1(data).digest())
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"zt-pyfiles-{digest.hexdigest()[:16]}.zip"
    if not path.exists():
        tmp = path.with_suffix(f".{uuid.uuid4().hex[:6]}.tmp")
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
            for name, data in entries:
                z.writestr(zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0)), data, zipfile.ZIP_DEFLATED)
        os.replace(tmp, path)
    else:
        path.touch()  # in use again: keep it out of the pruning below
    cutoff = time.time() - 7 * 86_400  # older code trees: jobs submitted with them are long gone
    for old in folder.glob("zt-pyfiles-*.zip"):
        if old != path and old.stat().st_mtime < cutoff:
            old.unlink(missing_ok=True)
    return path


def _write_settings(settings: Settings, folder: Path, job_name: str) -> Path:
    from config.settings import settings_to_json

    data = json.loads(settings_to_json(settings))
    data["stack"]["run_dir"] = str(settings.run_dir)
    data["stack"]["home"] = str(settings.home)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', job_name)}-{uuid.uuid4().hex[:8]}.json"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(data, f)
    return path


def _job_args(opts: Any, settings_file: Path, jars: list[str]) -> list[str]:
    args = ["--settings-file", str(settings_file), "--job-name", opts.job_name, "--jars", ";".join(jars)]
    for flag, value in (
        ("--group", opts.group),
        ("--topic-pattern", opts.topic_pattern),
        ("--dlq-topic", opts.dlq_topic),
        ("--redis-prefix", opts.redis_prefix),
        ("--hbase-prefix", opts.hbase_prefix),
        ("--txn-prefix", opts.transactional_id_prefix),
        ("--naive-prefix", getattr(opts, "naive_prefix", None)),
        ("--rules-file", str(Path(opts.rules_file).resolve()) if getattr(opts, "rules_file", None) else None),
        ("--actions-prefix", getattr(opts, "actions_prefix", None)),
        ("--control-topic", getattr(opts, "control_topic", None)),
        ("--control-results-topic", getattr(opts, "control_results_topic", None)),
        ("--delivery-topic", getattr(opts, "delivery_topic", None)),
        ("--identity-topic", getattr(opts, "identity_topic", None)),
        ("--tag-topic", getattr(opts, "tag_topic", None)),
        ("--recover-from", getattr(opts, "recover_from", None)),
    ):
        if value:
            args += [flag, value]
    for flag, on in (
        ("--drain", opts.bounded),
        ("--no-hbase", not opts.hbase),
        ("--fresh", not opts.resume),
        ("--naive-control", getattr(opts, "naive_control", False)),
        ("--rules", getattr(opts, "rules", False)),
        ("--no-attribution", not getattr(opts, "attribution", True)),
        ("--no-experiments", not getattr(opts, "experiments", True)),
    ):
        if on:
            args.append(flag)
    return args


def client_log(settings: Settings) -> Path | None:
    """The newest log file of the Flink CLI client (``flink-<ident>-client-<host>.log``)."""
    from zhongtai.devtools.stack._proc import paths_of

    logs = sorted(paths_of(settings).logs.glob("flink-*-client-*.log"), key=lambda p: p.stat().st_mtime)
    return logs[-1] if logs else None


def submit(
    settings: Settings,
    *,
    drain: bool = False,
    group: str | None = None,
    detached: bool = True,
    timeout: float | None = None,
    **run_options: Any,
) -> str:
    """Submit the event job to ``settings.flink.rest_url``; return its Flink job id.

    ``run_options`` are :class:`zhongtai.jobs.runner.RunOptions` fields (``topic_pattern``, ``dlq_topic``,
    ``redis_prefix``, ``hbase``, ``job_name``, ``naive_control``...). ``detached`` returns once the
    job is submitted; otherwise the call blocks until the job ends (``timeout``, default none).
    Raises :class:`SubmitError` naming the command, its output file and the client log.
    """
    from zhongtai.devtools.stack import flink_cli
    from zhongtai.devtools.stack._proc import paths_of
    from zhongtai.jobs.runner import RunOptions, connector_jars

    opts = RunOptions(bounded=drain, group=group, **run_options)
    job_name = opts.job_name_for(settings)
    opts = replace(opts, job_name=job_name)  # named on the command line of job_main
    try:
        rest(settings, "/overview", timeout=5)
    except (OSError, urllib.error.URLError) as e:
        raise SubmitError(
            f"no Flink cluster answers at {settings.flink.rest_url} ({e}); start the local one with "
            "`zhongtai stack up --flink-cluster`, or set flink.rest_url"
        ) from e
    paths = paths_of(settings)
    paths.make()
    jars = [p.resolve().as_uri() for p in connector_jars(settings)]
    settings_file = _write_settings(settings, paths.run / "submit", job_name)
    argv = [
        *flink_cli(settings),
        "run",
        "-m",
        _host_port(settings),
        *(["-d"] if detached else []),
        "-py",
        str(JOB_MAIN),
        "-pyexec",
        sys.executable,
        "-pyclientexec",
        sys.executable,
        "-pyfs",
        str(package_zip(paths.run / "submit")),
        *_job_args(opts, settings_file, jars),
    ]
    if not detached:
        argv.append("--wait")
    out_file = paths.logs / f"zt-submit-{re.sub(r'[^A-Za-z0-9_.-]', '_', job_name)}.log"
    shown = " ".join(shlex.quote(a) for a in argv[argv.index("run") - 1 :])
    try:
        with out_file.open("w", encoding="utf-8") as out:
            out.write(f"$ {shown}\n")
            out.flush()
            proc = subprocess.run(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=str(ROOT),
                timeout=timeout,
                check=False,
            )
    except subprocess.TimeoutExpired as e:
        raise SubmitError(
            f"`{shown}` did not return within {timeout} s; output in {out_file}, "
            f"client log {client_log(settings)}"
        ) from e
    finally:
        settings_file.unlink(missing_ok=True)
    text = out_file.read_text(encoding="utf-8", errors="replace")
    ids = _JOB_ID.findall(text)
    if proc.returncode != 0 or not ids:
        lines = text.splitlines()
        causes = [
            ln.strip() for ln in lines if ln.lstrip().startswith(("Caused by:", "pyflink.util.exceptions"))
        ]
        root = f"\nroot cause: {causes[-1]}" if causes else ""
        tail = "\n".join(lines[-40:])
        why = f"exited {proc.returncode}" if proc.returncode != 0 else "printed no job id"
        raise SubmitError(
            f"`{shown}` {why}; output in {out_file}, client log {client_log(settings)}{root}\n"
            f"--- last lines:\n{tail}"
        )
    return ids[-1]
