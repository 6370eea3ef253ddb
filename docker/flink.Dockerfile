# zhongtai Flink image: the Flink 2.3 of the apache-flink wheel (the same Flink as `zhongtai run` and the
# local cluster of `zhongtai stack up --flink-cluster`) laid out as /opt/flink like the official image,
# Python 3.11 + the project (thread mode runs the Python operators inside the TaskManager JVM), the Flink
# Kafka connector jar and zhongtai's JVM module jar. Runs the JobManager/TaskManager of
# docker/compose.yaml (`jobmanager` / `taskmanager` / any command) and the pods of the FlinkDeployment
# in deploy/k8s/ (the operator starts `/docker-entrypoint.sh bash -c "kubernetes-jobmanager.sh ..."`).
#   docker build -f docker/flink.Dockerfile -t zhongtai/flink:0.1.0 .
#   docker build -f docker/flink.Dockerfile --build-arg S3_PLUGIN=presto ...   # s3:// checkpoints
FROM python:3.11-slim-bookworm AS base

RUN apt-get update \
 && apt-get install -y --no-install-recommends openjdk-17-jre-headless procps \
 && rm -rf /var/lib/apt/lists/* \
 && ln -s "$(dirname "$(dirname "$(readlink -f "$(command -v java)")")")" /opt/java
ENV JAVA_HOME=/opt/java \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    ZT__STACK__HOME=/opt/zhongtai \
    ZT__STACK__RUN_DIR=/opt/zhongtai/run

WORKDIR /app
COPY pyproject.toml constraints.txt ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
      > /tmp/requirements.txt \
 && pip install --no-cache-dir -c constraints.txt -r /tmp/requirements.txt \
 && rm /tmp/requirements.txt
COPY . /app
# Editable like `make install`: connectors.jvm finds the JVM sources in /app/jvm and, by their digest,
# the jar built below.
RUN pip install --no-cache-dir --no-deps -e .

# ---- jars: built and fetched by the project's own code, into the layout it reads at run time ----------
FROM base AS jars
ARG S3_PLUGIN=""
RUN apt-get update \
 && apt-get install -y --no-install-recommends openjdk-17-jdk-headless maven \
 && rm -rf /var/lib/apt/lists/*
# <home>/lib/zhongtai-jvm/zhongtai-jvm-<digest>.jar (`python -m connectors.jvm`, as `make install`) and
# <home>/lib/flink/flink-sql-connector-kafka-<version>.jar + its stamp (stack.flink_kafka_connector).
RUN python -m connectors.jvm \
 && python -c "from config import load_settings; from zhongtai.devtools.stack import ensure_jars; ensure_jars(load_settings(), ('flink',))" \
 && mkdir -p /opt/zhongtai/jars /opt/flink-plugins \
 && ln -s /opt/zhongtai/lib/zhongtai-jvm/zhongtai-jvm-*.jar /opt/zhongtai/jars/zhongtai-jvm.jar \
 && ln -s /opt/zhongtai/lib/flink/flink-sql-connector-kafka-*.jar /opt/zhongtai/jars/flink-sql-connector-kafka.jar \
 && if [ -n "$S3_PLUGIN" ]; then \
      FLINK_VERSION="$(python -c 'from pyflink.version import __version__; print(__version__)')" \
      && mvn -B -q org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy \
           -Dartifact="org.apache.flink:flink-s3-fs-${S3_PLUGIN}:${FLINK_VERSION}" \
           -DoutputDirectory="/opt/flink-plugins/s3-fs-${S3_PLUGIN}"; \
    fi

# ---- the image ------------------------------------------------------------------------------------------
FROM base
COPY --from=jars /opt/zhongtai/lib /opt/zhongtai/lib
COPY --from=jars /opt/zhongtai/jars /opt/zhongtai/jars
COPY --from=jars /opt/flink-plugins /opt/flink-plugins
# /opt/flink as in the official image. lib/ = the wheel's lib/ + opt/flink-python-*.jar, as
# zhongtai.devtools.stack.flink_cluster.write_lib: thread mode loads pemja parent-first, once per JVM.
RUN set -eux; \
    WHEEL="$(python -c 'import os, pyflink; print(os.path.dirname(pyflink.__file__))')"; \
    mkdir -p /opt/flink/lib /opt/flink/conf /opt/flink/log /opt/flink/usrlib /opt/flink/plugins /flink-data; \
    ln -s "$WHEEL/bin" /opt/flink/bin; \
    ln -s "$WHEEL/opt" /opt/flink/opt; \
    for jar in "$WHEEL"/lib/*.jar "$WHEEL"/opt/flink-python-*.jar; do ln -s "$jar" /opt/flink/lib/; done; \
    cp -r "$WHEEL"/plugins/* /opt/flink/plugins/; \
    cp -r /opt/flink-plugins/. /opt/flink/plugins/; \
    cp "$WHEEL"/conf/* /opt/flink/conf/; \
    cp /app/docker/flink-config.yaml /opt/flink/conf/config.yaml; \
    useradd --uid 9999 --user-group --home-dir /opt/flink flink; \
    mkdir -p /opt/zhongtai/run; \
    chown -R flink:flink /opt/flink/conf /opt/flink/log /opt/flink/usrlib /opt/zhongtai /flink-data
COPY docker/flink-entrypoint.sh /docker-entrypoint.sh
ENV FLINK_HOME=/opt/flink \
    PATH=/opt/flink/bin:$PATH
USER 9999
EXPOSE 8081 6123 9249
ENTRYPOINT ["/docker-entrypoint.sh"]
CMD ["help"]
