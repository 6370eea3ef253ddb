package io.zhongtai.flink.time;

import org.apache.flink.api.common.eventtime.SerializableTimestampAssigner;
import org.apache.flink.types.Row;

/**
 * A row's event time is its BIGINT field {@code field} (epoch ms); a null field keeps the record's
 * previous timestamp. The Python reference: {@code value[field]} (the assigners it replaces).
 */
public final class RowFieldTimestamps implements SerializableTimestampAssigner<Row> {

    private static final long serialVersionUID = 1L;

    private final int field;

    public RowFieldTimestamps(int field) {
        this.field = field;
    }

    @Override
    public long extractTimestamp(Row element, long recordTimestamp) {
        Object v = element.getField(field);
        return v instanceof Number n ? n.longValue() : recordTimestamp;
    }
}
