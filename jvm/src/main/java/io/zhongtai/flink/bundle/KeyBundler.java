package io.zhongtai.flink.bundle;

import java.math.BigDecimal;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

import org.apache.flink.streaming.api.operators.AbstractStreamOperator;
import org.apache.flink.streaming.api.operators.BoundedOneInput;
import org.apache.flink.streaming.api.operators.OneInputStreamOperator;
import org.apache.flink.streaming.api.watermark.Watermark;
import org.apache.flink.streaming.runtime.streamrecord.StreamRecord;
import org.apache.flink.streaming.runtime.watermarkstatus.WatermarkStatus;
import org.apache.flink.types.Row;

/**
 * Packs the rows of one key into one record: {@code Row(key, json)} with {@code json} the JSON array
 * of the rows' other fields, {@code [[f1, f2, ...], ...]}, in arrival order.
 *
 * <p>Generic and semantics-free: it never looks at a value beyond serialising it (strings, integers,
 * booleans, null; {@link BigDecimal} as a JSON string, so that no decimal digit is lost; anything else
 * as its {@code toString()}). The Python reference is {@code pipelines.bundles.bundle_rows}.
 *
 * <p>The output carries exactly the input's rows, watermarks and their order per key: pending bundles
 * are emitted before every watermark or watermark status is forwarded, before every checkpoint barrier
 * ({@link #prepareSnapshotPreBarrier}, so the operator holds no state) and at the end of input. In
 * between, a bundle is emitted at the latest {@code maxDelayMs} of processing time after its key's
 * first pending row, or when {@code maxRows} rows are pending in all. A downstream keyed function that
 * processes a bundle's rows in order therefore sees what it would have seen row by row; only the number
 * of records (and of crossings into Python) changes.
 *
 * <p>A bundle record's timestamp is the largest timestamp of its rows (none when no row had one).
 */
public final class KeyBundler extends AbstractStreamOperator<Row>
        implements OneInputStreamOperator<Row, Row>, BoundedOneInput {

    private static final long serialVersionUID = 1L;

    private final long maxDelayMs;
    private final int maxRows;

    private transient Map<String, Pending> pending;
    private transient int pendingRows;
    private transient boolean timerSet;
    private transient StringBuilder sb;

    private static final class Pending {
        final List<Row> rows = new ArrayList<>(4);
        long maxTs = Long.MIN_VALUE;
        boolean hasTs;
    }

    public KeyBundler(long maxDelayMs, int maxRows) {
        if (maxDelayMs < 0 || maxRows < 1) {
            throw new IllegalArgumentException("KeyBundler: maxDelayMs must be >= 0 and maxRows >= 1, got "
                    + maxDelayMs + " and " + maxRows);
        }
        this.maxDelayMs = maxDelayMs;
        this.maxRows = maxRows;
    }

    @Override
    public void open() throws Exception {
        super.open();
        pending = new LinkedHashMap<>();
        sb = new StringBuilder(256);
    }

    @Override
    public void processElement(StreamRecord<Row> element) throws Exception {
        Row row = element.getValue();
        Object k = row.getField(0);
        String key = k == null ? "" : k.toString();
        Pending p = pending.get(key);
        if (p == null) {
            p = new Pending();
            pending.put(key, p);
        }
        p.rows.add(row);
        if (element.hasTimestamp()) {
            p.hasTs = true;
            p.maxTs = Math.max(p.maxTs, element.getTimestamp());
        }
        pendingRows++;
        if (pendingRows >= maxRows || maxDelayMs == 0) {
            flush();
        } else if (!timerSet) {
            timerSet = true;
            long at = getProcessingTimeService().getCurrentProcessingTime() + maxDelayMs;
            getProcessingTimeService().registerTimer(at, t -> {
                timerSet = false;
                flush();
            });
        }
    }

    @Override
    public void processWatermark(Watermark mark) throws Exception {
        flush();
        super.processWatermark(mark);
    }

    @Override
    public void processWatermarkStatus(WatermarkStatus status) throws Exception {
        flush();
        super.processWatermarkStatus(status);
    }

    @Override
    public void prepareSnapshotPreBarrier(long checkpointId) throws Exception {
        flush();
        super.prepareSnapshotPreBarrier(checkpointId);
    }

    @Override
    public void endInput() throws Exception {
        flush();
    }

    @Override
    public void finish() throws Exception {
        flush();
        super.finish();
    }

    private void flush() {
        if (pendingRows == 0) {
            return;
        }
        for (Map.Entry<String, Pending> e : pending.entrySet()) {
            Pending p = e.getValue();
            sb.setLength(0);
            sb.append('[');
            for (int i = 0; i < p.rows.size(); i++) {
                if (i > 0) {
                    sb.append(',');
                }
                Json.appendRow(sb, p.rows.get(i), 1);
            }
            sb.append(']');
            Row out = Row.of(e.getKey(), sb.toString());
            if (p.hasTs) {
                output.collect(new StreamRecord<>(out, p.maxTs));
            } else {
                output.collect(new StreamRecord<>(out));
            }
        }
        pending.clear();
        pendingRows = 0;
    }
}
