package io.zhongtai.flink.bundle;

import java.time.Duration;

import org.apache.flink.api.common.eventtime.WatermarkStrategy;
import org.apache.flink.api.common.typeinfo.TypeInformation;
import org.apache.flink.api.common.typeinfo.Types;
import org.apache.flink.streaming.api.datastream.DataStream;
import org.apache.flink.streaming.api.datastream.SingleOutputStreamOperator;
import org.apache.flink.types.Row;

import io.zhongtai.flink.time.RowFieldTimestamps;

/** Entry points for PyFlink (called through py4j by {@code pipelines.bundles}). */
public final class Bundles {

    private Bundles() {}

    /** The output type of {@link KeyBundler}: {@code Row(k STRING, v STRING)}. */
    public static TypeInformation<Row> bundleType() {
        return Types.ROW_NAMED(new String[] {"k", "v"}, Types.STRING, Types.STRING);
    }

    /** {@code in} → {@link KeyBundler} (chained to its input), named and with a stable uid. */
    public static SingleOutputStreamOperator<Row> bundleByKey(
            DataStream<Row> in, String name, String uid, long maxDelayMs, int maxRows) {
        // the default chaining strategy (ALWAYS): the bundler runs in its input's task, no extra hop
        return in.transform(name, bundleType(), new KeyBundler(maxDelayMs, maxRows)).uid(uid);
    }

    /**
     * Event time from a BIGINT field of the rows, bounded out-of-orderness, idleness; all on the JVM
     * (no Python call per row). {@code idleMs <= 0} means no idleness.
     */
    public static SingleOutputStreamOperator<Row> withFieldTimestamps(
            DataStream<Row> in, int field, long outOfOrdernessMs, long idleMs, String name, String uid) {
        WatermarkStrategy<Row> ws = WatermarkStrategy.<Row>forBoundedOutOfOrderness(Duration.ofMillis(outOfOrdernessMs))
                .withTimestampAssigner(new RowFieldTimestamps(field));
        if (idleMs > 0) {
            ws = ws.withIdleness(Duration.ofMillis(idleMs));
        }
        return in.assignTimestampsAndWatermarks(ws).name(name).uid(uid);
    }
}
