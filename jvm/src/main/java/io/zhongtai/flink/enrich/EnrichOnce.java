package io.zhongtai.flink.enrich;

import java.time.Duration;

import org.apache.flink.api.common.functions.OpenContext;
import org.apache.flink.api.common.state.ListState;
import org.apache.flink.api.common.state.ListStateDescriptor;
import org.apache.flink.api.common.state.StateTtlConfig;
import org.apache.flink.api.common.state.ValueState;
import org.apache.flink.api.common.state.ValueStateDescriptor;
import org.apache.flink.api.common.typeinfo.TypeInformation;
import org.apache.flink.api.common.typeinfo.Types;
import org.apache.flink.api.java.functions.KeySelector;
import org.apache.flink.streaming.api.datastream.DataStream;
import org.apache.flink.streaming.api.datastream.SingleOutputStreamOperator;
import org.apache.flink.streaming.api.functions.KeyedProcessFunction;
import org.apache.flink.types.Row;
import org.apache.flink.util.Collector;

/**
 * Each data row of a key is emitted ONCE, with the key's value at the time it met the value.
 *
 * <p>Input rows, in one stream (so that their order per key is the order of their source):
 * {@code Row(k STRING, isValue BOOLEAN, v STRING, d1, ..., dn)}. A value row ({@code isValue} true) sets
 * the key's value to {@code v} (a null {@code v} clears it). A data row ({@code isValue} false) is emitted
 * at once as {@code Row(value, d1, ..., dn)} when its key has a value, and otherwise waits in state until
 * the key's first value arrives, which emits every waiting row in arrival order. A later value change
 * never emits a row again.
 *
 * <p>This is what a streaming SQL inner join of the data rows with an upsert table keeps once per data row
 * (keep-first on a unique column), without the join's state: the join stores every data row for ever
 * (to re-emit it when the value changes), and the heap backend's incremental TTL cleanup copies a key's
 * whole stored map on each visit, so its cost per row grew with the stream's length
 * (docs/performance.md, "Session 6: the whole job at 1M events"). Here a data row is held only while
 * its key has no value (for at most {@code pendingTtlMs} of processing time); the value itself is
 * held without expiry (one string per key).
 *
 * <p>Generic and semantics-free: it never looks at a data field. The Python reference is
 * {@code pipelines.events.enrich_once}.
 */
public final class EnrichOnce extends KeyedProcessFunction<String, Row, Row> {

    private static final long serialVersionUID = 1L;

    private final TypeInformation<Row> inType;
    private final long pendingTtlMs;

    private transient ValueState<String> value;
    private transient ListState<Row> pending;
    private transient ValueState<Boolean> hasPending;

    public EnrichOnce(TypeInformation<Row> inType, long pendingTtlMs) {
        this.inType = inType;
        this.pendingTtlMs = pendingTtlMs;
    }

    @Override
    public void open(OpenContext ctx) {
        value = getRuntimeContext().getState(new ValueStateDescriptor<>("value", Types.STRING));
        ListStateDescriptor<Row> pd = new ListStateDescriptor<>("pending", inType);
        ValueStateDescriptor<Boolean> hd = new ValueStateDescriptor<>("has-pending", Types.BOOLEAN);
        if (pendingTtlMs > 0) {
            StateTtlConfig ttl = StateTtlConfig.newBuilder(Duration.ofMillis(pendingTtlMs))
                    .setUpdateType(StateTtlConfig.UpdateType.OnCreateAndWrite)
                    .setStateVisibility(StateTtlConfig.StateVisibility.NeverReturnExpired)
                    .build();
            pd.enableTimeToLive(ttl);
            hd.enableTimeToLive(ttl);
        }
        pending = getRuntimeContext().getListState(pd);
        hasPending = getRuntimeContext().getState(hd);
    }

    @Override
    public void processElement(Row in, Context ctx, Collector<Row> out) throws Exception {
        if (Boolean.TRUE.equals(in.getField(1))) {
            String v = (String) in.getField(2);
            if (v == null) {
                value.clear();
                return;
            }
            value.update(v);
            if (hasPending.value() != null) {
                for (Row waiting : pending.get()) {
                    out.collect(enriched(v, waiting));
                }
                pending.clear();
                hasPending.clear();
            }
            return;
        }
        String v = value.value();
        if (v != null) {
            out.collect(enriched(v, in));
        } else {
            pending.add(in);
            hasPending.update(Boolean.TRUE);
        }
    }

    private static Row enriched(String v, Row in) {
        int n = in.getArity() - 3;
        Row r = new Row(n + 1);
        r.setField(0, v);
        for (int i = 0; i < n; i++) {
            r.setField(i + 1, in.getField(i + 3));
        }
        return r;
    }

    /** The key: field 0 of the input rows (a null key is the empty string). */
    public static final class FirstField implements KeySelector<Row, String> {
        private static final long serialVersionUID = 1L;

        @Override
        public String getKey(Row r) {
            Object k = r.getField(0);
            return k == null ? "" : k.toString();
        }
    }

    /**
     * Entry point for PyFlink: {@code in} (a Table converted to a DataStream of rows) keyed by field 0 →
     * {@link EnrichOnce}, named, with a stable uid. {@code outType}: the value's column (STRING), then the
     * data fields' types.
     */
    public static SingleOutputStreamOperator<Row> apply(DataStream<Row> in, TypeInformation<Row> outType,
            long pendingTtlMs, String name, String uid) {
        return in.keyBy(new FirstField())
                .process(new EnrichOnce(in.getType(), pendingTtlMs), outType)
                .name(name)
                .uid(uid);
    }

}
