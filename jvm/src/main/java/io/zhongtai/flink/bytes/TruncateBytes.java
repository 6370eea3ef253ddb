package io.zhongtai.flink.bytes;

import java.util.Arrays;

import org.apache.flink.table.functions.ScalarFunction;

/**
 * {@code ZT_TRUNCATE_BYTES(b, n)}: the first {@code n} bytes of {@code b} (all of it when shorter; NULL for
 * NULL). Flink SQL has no byte-level SUBSTRING. Generic; the Python reference is {@code b[:n]}.
 */
public final class TruncateBytes extends ScalarFunction {

    private static final long serialVersionUID = 1L;

    public byte[] eval(byte[] b, Integer n) {
        if (b == null || n == null) {
            return b;
        }
        return b.length <= n ? b : Arrays.copyOf(b, Math.max(n, 0));
    }
}
