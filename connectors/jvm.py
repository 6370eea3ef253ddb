"""zhongtai's own JVM module (``jvm/``): build it with Maven and find the jar the job ships.

The module holds generic, semantics-free hot-path functions (docs/jvm.md): a single-parse decode, the
person-row bundler, a field timestamp assigner. Flink is a ``provided`` dependency, so the jar is small
and runs on the apache-flink wheel's ``flink-dist``.

The jar is cached under ``<stack home>/lib/zhongtai-jvm/zhongtai-jvm-<hash>.jar``, where ``<hash>`` is a
digest of ``jvm/pom.xml`` and every file under ``jvm/src/main``: a changed source builds a new jar, an
unchanged one is never rebuilt. ``make install`` builds it (``python -m connectors.jvm``); a job that finds
no jar for the current sources builds it first.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import shutil
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from config.settings import Settings

logger = logging.getLogger(__name__)

SOURCE_DIR = Path(__file__).resolve().parent.parent / "jvm"


class JvmBuildError(RuntimeError):
    """The JVM module could not be built; the message says what to install or fix."""


def source_digest(root: Path = SOURCE_DIR) -> str:
    """A digest of the module's build inputs (pom + main sources), 16 hex."""
    h = hashlib.sha256()
    files = [root / "pom.xml", *sorted(p for p in (root / "src" / "main").rglob("*") if p.is_file())]
    for f in files:
        h.update(str(f.relative_to(root)).encode())
        h.update(b"\0")
        h.update(f.read_bytes())
        h.update(b"\0")
    return h.hexdigest()[:16]


def _cache_dir(settings: Settings | None) -> Path:
    if settings is None:
        from config.settings import load_settings

        settings = load_settings()
    return settings.home / "lib" / "zhongtai-jvm"


def zhongtai_jar(settings: Settings | None = None, *, log=logger.info) -> Path:
    """The jar built from the current ``jvm/`` sources, building it first when it is not cached."""
    if not (SOURCE_DIR / "pom.xml").exists():
        raise JvmBuildError(f"zhongtai's JVM sources are missing ({SOURCE_DIR}/pom.xml): run from a checkout "
                            "of the project, or put a built zhongtai-jvm jar in flink.options['pipeline.jars']")
    digest = source_digest()
    cache = _cache_dir(settings)
    jar = cache / f"zhongtai-jvm-{digest}.jar"
    if jar.exists():
        return jar
    cache.mkdir(parents=True, exist_ok=True)
    with (cache / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one build at a time, across processes
        if jar.exists():
            return jar
        mvn = shutil.which("mvn")
        if mvn is None:
            raise JvmBuildError("building zhongtai's JVM module needs Maven 3.8+ and a JDK 17: "
                                "apt-get install -y maven openjdk-17-jdk-headless")
        log(f"building zhongtai's JVM module ({SOURCE_DIR}) with Maven …")
        work = cache / f"build-{digest}"
        shutil.rmtree(work, ignore_errors=True)
        shutil.copytree(SOURCE_DIR, work, ignore=shutil.ignore_patterns("target"))
        cmd = [mvn, "-B", "-q", "package", "-DskipTests"]
        proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True, check=False)
        built = work / "target" / "zhongtai-jvm.jar"
        if proc.returncode != 0 or not built.exists():
            last = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-30:])
            raise JvmBuildError(f"building zhongtai's JVM module failed (mvn exit {proc.returncode}) in {work}; "
                                f"fix the Java sources under {SOURCE_DIR}. Maven said:\n{last}")
        tmp = jar.with_suffix(".partial")
        shutil.copyfile(built, tmp)
        tmp.rename(jar)
        shutil.rmtree(work, ignore_errors=True)
        # Jars of other digests stay: another checkout (a git worktree, a running job) may use one.
    return jar


def main(argv: list[str] | None = None) -> int:
    """``python -m connectors.jvm``: build (if needed) and print the jar's path."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        print(zhongtai_jar(log=print))
    except JvmBuildError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
