#!/usr/bin/env bash
# Start the standalone HBase master (ZooKeeper + master + region server) in the background, then
# the Thrift1 server in the foreground; stop the master when the Thrift server ends.
set -euo pipefail
JVM=(-XX:+UseG1GC -Djava.net.preferIPv4Stack=true -Dzookeeper.admin.enableServer=false
  -Dlog4j2.configurationFile=/opt/hbase/conf/log4j2.properties
  -Dorg.apache.hbase.thirdparty.io.netty.tryReflectionSetAccessible=true --add-modules jdk.unsupported
  --add-opens=java.base/java.io=ALL-UNNAMED --add-opens=java.base/java.nio=ALL-UNNAMED
  --add-opens=java.base/sun.nio.ch=ALL-UNNAMED --add-opens=java.base/java.lang=ALL-UNNAMED
  --add-opens=java.base/jdk.internal.ref=ALL-UNNAMED --add-opens=java.base/java.lang.reflect=ALL-UNNAMED
  --add-opens=java.base/java.util=ALL-UNNAMED --add-opens=java.base/java.util.concurrent=ALL-UNNAMED
  --add-exports=java.base/jdk.internal.misc=ALL-UNNAMED --add-exports=java.base/sun.net.dns=ALL-UNNAMED
  --add-exports=java.base/sun.net.util=ALL-UNNAMED --add-exports=java.security.jgss/sun.security.krb5=ALL-UNNAMED
  -cp "/opt/hbase/conf:/opt/hbase/lib/*")
java -Xmx1g "${JVM[@]}" org.apache.hadoop.hbase.master.HMaster start &
MASTER=$!
trap 'kill -TERM $MASTER 2>/dev/null; wait $MASTER' EXIT TERM INT
until bash -c '</dev/tcp/127.0.0.1/2181' 2>/dev/null; do sleep 1; done
java -Xmx384m "${JVM[@]}" org.apache.hadoop.hbase.thrift.ThriftServer -p 9090 --infoport -1 start
