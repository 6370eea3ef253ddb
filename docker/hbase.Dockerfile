# Standalone HBase (hadoop3 build) + Thrift1 server from the same Maven Central jars as the local stack
# (zhongtai/devtools/stack/hbase-pom.xml; versions: stack.hbase_version, zhongtai.devtools.stack.jars.HBASE_LOG4J).
#   docker build -f docker/hbase.Dockerfile .
FROM maven:3.9-eclipse-temurin-17 AS jars
ARG HBASE_VERSION=2.6.1-hadoop3
ARG HBASE_THRIFT_VERSION=2.6.1
ARG LOG4J_VERSION=2.17.2
COPY zhongtai/devtools/stack/hbase-pom.xml /build/pom.xml
RUN mvn -B -q -f /build/pom.xml org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy-dependencies \
      -Dhbase.version=${HBASE_VERSION} -Dhbase.thrift.version=${HBASE_THRIFT_VERSION} \
      -Dlog4j.version=${LOG4J_VERSION} -DincludeScope=runtime -DoutputDirectory=/opt/hbase/lib

FROM eclipse-temurin:17-jre
COPY --from=jars /opt/hbase/lib /opt/hbase/lib
COPY docker/hbase-site.xml /opt/hbase/conf/hbase-site.xml
COPY zhongtai/devtools/stack/hbase-log4j2.properties /opt/hbase/conf/log4j2.properties
COPY docker/hbase-entrypoint.sh /opt/hbase/entrypoint.sh
RUN chmod +x /opt/hbase/entrypoint.sh && mkdir -p /data
EXPOSE 9090 2181
ENTRYPOINT ["/opt/hbase/entrypoint.sh"]
