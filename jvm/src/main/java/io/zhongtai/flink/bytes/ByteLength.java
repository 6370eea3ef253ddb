package io.zhongtai.flink.bytes;

import org.apache.flink.table.functions.ScalarFunction;

/** {@code ZT_BYTE_LENGTH(b)}: the number of bytes of {@code b} (NULL for NULL). Python reference: {@code len(b)}. */
public final class ByteLength extends ScalarFunction {

    private static final long serialVersionUID = 1L;

    public Integer eval(byte[] b) {
        return b == null ? null : b.length;
    }
}
