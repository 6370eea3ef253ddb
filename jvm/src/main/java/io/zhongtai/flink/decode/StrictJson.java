package io.zhongtai.flink.decode;

import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.HashMap;

/**
 * A strict RFC 8259 JSON parser over UTF-8 bytes, with the readings of docs/semantics.md.
 *
 * <p>Python reference: {@code zhongtai.devtools.generator.oracle} ({@code json.JSONDecoder} with every number
 * kept as its literal text, {@code NaN}/{@code Infinity} rejected, plus {@code _check_tree}). Rejected:
 * anything but one value surrounded by optional JSON white space (trailing bytes, a second value),
 * trailing commas, comments, {@code NaN}/{@code Infinity}, leading zeros, {@code +1}, {@code .5},
 * {@code 1.}, raw control characters (U+0000–U+001F) in strings, unknown escapes, an escape that
 * denotes a lone UTF-16 surrogate, and nesting deeper than {@code maxDepth} (the outermost container is
 * depth 1). Duplicate keys: the last value wins, at the key's first position. The bytes must already be
 * valid UTF-8 ({@link #validUtf8}).
 *
 * <p>Values: {@link String}, {@link Num} (a number's literal text), {@link Boolean}, {@link #NULL},
 * {@link Obj}, {@link ArrayList}. Callers build only the values they read ({@link #value}) and skip the
 * rest ({@link #skip}: validated, nothing allocated). Not thread-safe; one instance per parse.
 */
final class StrictJson {

    /** Thrown for any input that is not valid JSON by the rules above. */
    static final class Malformed extends Exception {
        Malformed(String message) {
            super(message, null, false, false);
        }
    }

    /** JSON {@code null}. */
    static final Object NULL = new Object() {
        @Override
        public String toString() {
            return "null";
        }
    };

    /** A JSON number: its literal text, exactly as in the input. */
    static final class Num {
        final String text;
        /** True when the literal has neither a fraction nor an exponent. */
        final boolean integer;

        Num(String text, boolean integer) {
            this.text = text;
            this.integer = integer;
        }
    }

    /** A JSON object: keys in first-seen order; a repeated key keeps its first position and its last value. */
    static final class Obj {
        final ArrayList<String> keys = new ArrayList<>(8);
        final ArrayList<Object> values = new ArrayList<>(8);
        private HashMap<String, Integer> index;

        void put(String key, Object value) {
            int i = indexOf(key);
            if (i >= 0) {
                values.set(i, value);
                return;
            }
            keys.add(key);
            values.add(value);
            if (index != null) {
                index.put(key, keys.size() - 1);
            } else if (keys.size() > 16) {
                index = new HashMap<>();
                for (int j = 0; j < keys.size(); j++) {
                    index.put(keys.get(j), j);
                }
            }
        }

        int indexOf(String key) {
            if (index != null) {
                Integer i = index.get(key);
                return i == null ? -1 : i;
            }
            for (int i = 0; i < keys.size(); i++) {
                if (keys.get(i).equals(key)) {
                    return i;
                }
            }
            return -1;
        }

        /** The value of {@code key}, or Java null when absent. */
        Object get(String key) {
            int i = indexOf(key);
            return i < 0 ? null : values.get(i);
        }
    }

    private final byte[] buf;
    private final int end;
    private final int maxDepth;
    private int pos;
    private StringBuilder sb;

    StrictJson(byte[] buf, int maxDepth) {
        this.buf = buf;
        this.end = buf.length;
        this.maxDepth = maxDepth;
    }

    // --- document level ---------------------------------------------------------------------------

    /** Skips white space and expects an object to start; true when it does (false: another value or nothing). */
    boolean startObject() throws Malformed {
        skipWs();
        if (pos < end && buf[pos] == '{') {
            pos++;
            return true;
        }
        return false;
    }

    /** Inside an object (after '{' or after a member): the next key, or Java null at the closing '}'. */
    String nextKey(boolean first) throws Malformed {
        if (!memberStart(first)) {
            return null;
        }
        String key = string();
        colon();
        return key;
    }

    /**
     * Inside an object: false at the closing '}' (consumed); true when a member follows, with the position
     * after its key's opening quote.
     */
    private boolean memberStart(boolean first) throws Malformed {
        skipWs();
        if (pos >= end) {
            throw new Malformed("unterminated object");
        }
        byte b = buf[pos];
        if (b == '}') {
            pos++;
            return false;
        }
        if (!first) {
            if (b != ',') {
                throw new Malformed("expected ',' or '}'");
            }
            pos++;
            skipWs();
        }
        if (pos >= end || buf[pos] != '"') {
            throw new Malformed("expected a key");
        }
        pos++;
        return true;
    }

    private void colon() throws Malformed {
        skipWs();
        if (pos >= end || buf[pos] != ':') {
            throw new Malformed("expected ':'");
        }
        pos++;
    }

    /** After the outermost value: only white space may follow. */
    void end() throws Malformed {
        skipWs();
        if (pos != end) {
            throw new Malformed("bytes after the JSON value");
        }
    }

    /** Validates the rest of the input as any JSON value followed by nothing (for a non-object document). */
    void skipDocument() throws Malformed {
        skipWs();
        skip(0);
        end();
    }

    // --- values -----------------------------------------------------------------------------------

    /** The next value, built; {@code depth} is the depth of the container it sits in (top level: 0). */
    Object value(int depth) throws Malformed {
        skipWs();
        if (pos >= end) {
            throw new Malformed("expected a value");
        }
        byte b = buf[pos];
        switch (b) {
            case '"':
                pos++;
                return string();
            case '{': {
                checkDepth(depth + 1);
                pos++;
                Obj o = new Obj();
                boolean first = true;
                String k;
                while ((k = nextKey(first)) != null) {
                    o.put(k, value(depth + 1));
                    first = false;
                }
                return o;
            }
            case '[': {
                checkDepth(depth + 1);
                pos++;
                ArrayList<Object> a = new ArrayList<>();
                if (arrayStart()) {
                    do {
                        a.add(value(depth + 1));
                    } while (arrayNext());
                }
                return a;
            }
            case 't':
                literal("true");
                return Boolean.TRUE;
            case 'f':
                literal("false");
                return Boolean.FALSE;
            case 'n':
                literal("null");
                return NULL;
            default:
                return number();
        }
    }

    /** Validates the next value without building it. */
    void skip(int depth) throws Malformed {
        skipWs();
        if (pos >= end) {
            throw new Malformed("expected a value");
        }
        byte b = buf[pos];
        switch (b) {
            case '"':
                pos++;
                skipString();
                return;
            case '{': {
                checkDepth(depth + 1);
                pos++;
                boolean first = true;
                while (skipKey(first)) {
                    skip(depth + 1);
                    first = false;
                }
                return;
            }
            case '[':
                checkDepth(depth + 1);
                pos++;
                if (arrayStart()) {
                    do {
                        skip(depth + 1);
                    } while (arrayNext());
                }
                return;
            case 't':
                literal("true");
                return;
            case 'f':
                literal("false");
                return;
            case 'n':
                literal("null");
                return;
            default:
                numberEnd();
        }
    }

    private boolean skipKey(boolean first) throws Malformed {
        if (!memberStart(first)) {
            return false;
        }
        skipString();
        colon();
        return true;
    }

    /** After '[': true when an element follows, false at an immediate ']'. */
    private boolean arrayStart() throws Malformed {
        skipWs();
        if (pos < end && buf[pos] == ']') {
            pos++;
            return false;
        }
        return true;
    }

    /** After an element: true when another follows (','), false at ']'. */
    private boolean arrayNext() throws Malformed {
        skipWs();
        if (pos >= end) {
            throw new Malformed("unterminated array");
        }
        byte b = buf[pos++];
        if (b == ',') {
            skipWs();
            if (pos < end && buf[pos] == ']') {
                throw new Malformed("trailing comma");
            }
            return true;
        }
        if (b == ']') {
            return false;
        }
        throw new Malformed("expected ',' or ']'");
    }

    private void checkDepth(int depth) throws Malformed {
        if (depth > maxDepth) {
            throw new Malformed("nested deeper than " + maxDepth);
        }
    }

    private void literal(String word) throws Malformed {
        int n = word.length();
        if (end - pos < n) {
            throw new Malformed("bad literal");
        }
        for (int i = 0; i < n; i++) {
            if (buf[pos + i] != word.charAt(i)) {
                throw new Malformed("bad literal");
            }
        }
        pos += n;
    }

    private void skipWs() {
        while (pos < end) {
            byte b = buf[pos];
            if (b == ' ' || b == '\n' || b == '\r' || b == '\t') {
                pos++;
            } else {
                return;
            }
        }
    }

    // --- numbers ----------------------------------------------------------------------------------

    /** Moves past a number literal; returns true when it is an integer (no fraction, no exponent). */
    private boolean numberEnd() throws Malformed {
        boolean integer = true;
        if (pos < end && buf[pos] == '-') {
            pos++;
        }
        if (pos >= end) {
            throw new Malformed("bad number");
        }
        byte b = buf[pos];
        if (b == '0') {
            pos++;
        } else if (b >= '1' && b <= '9') {
            pos++;
            while (pos < end && buf[pos] >= '0' && buf[pos] <= '9') {
                pos++;
            }
        } else {
            throw new Malformed("bad value");
        }
        if (pos < end && buf[pos] == '.') {
            integer = false;
            pos++;
            int s = pos;
            while (pos < end && buf[pos] >= '0' && buf[pos] <= '9') {
                pos++;
            }
            if (pos == s) {
                throw new Malformed("bad number");
            }
        }
        if (pos < end && (buf[pos] == 'e' || buf[pos] == 'E')) {
            integer = false;
            pos++;
            if (pos < end && (buf[pos] == '+' || buf[pos] == '-')) {
                pos++;
            }
            int s = pos;
            while (pos < end && buf[pos] >= '0' && buf[pos] <= '9') {
                pos++;
            }
            if (pos == s) {
                throw new Malformed("bad number");
            }
        }
        return integer;
    }

    private Num number() throws Malformed {
        int start = pos;
        boolean integer = numberEnd();
        return new Num(new String(buf, start, pos - start, StandardCharsets.ISO_8859_1), integer);
    }

    // --- strings ----------------------------------------------------------------------------------

    /** After the opening quote: the string's value. */
    private String string() throws Malformed {
        int start = pos;
        while (pos < end) {
            byte b = buf[pos];
            if (b == '"') {
                String s = new String(buf, start, pos - start, StandardCharsets.UTF_8);
                pos++;
                return s;
            }
            if (b == '\\') {
                return escapedString(start);
            }
            if (b >= 0 && b < 0x20) {
                throw new Malformed("control character in a string");
            }
            pos++;
        }
        throw new Malformed("unterminated string");
    }

    private String escapedString(int start) throws Malformed {
        if (sb == null) {
            sb = new StringBuilder(64);
        }
        sb.setLength(0);
        int seg = start;
        while (pos < end) {
            byte b = buf[pos];
            if (b == '"') {
                sb.append(new String(buf, seg, pos - seg, StandardCharsets.UTF_8));
                pos++;
                return sb.toString();
            }
            if (b >= 0 && b < 0x20) {
                throw new Malformed("control character in a string");
            }
            if (b != '\\') {
                pos++;
                continue;
            }
            sb.append(new String(buf, seg, pos - seg, StandardCharsets.UTF_8));
            pos++;
            if (pos >= end) {
                break;
            }
            byte e = buf[pos++];
            switch (e) {
                case '"': sb.append('"'); break;
                case '\\': sb.append('\\'); break;
                case '/': sb.append('/'); break;
                case 'b': sb.append('\b'); break;
                case 'f': sb.append('\f'); break;
                case 'n': sb.append('\n'); break;
                case 'r': sb.append('\r'); break;
                case 't': sb.append('\t'); break;
                case 'u':
                    sb.appendCodePoint(unicodeEscape());
                    break;
                default:
                    throw new Malformed("bad escape");
            }
            seg = pos;
        }
        throw new Malformed("unterminated string");
    }

    /**
     * After a backslash-u: the code point of the escape, a surrogate pair written as two escapes combined.
     * A surrogate that is not part of such a pair is no Unicode character: malformed.
     */
    private int unicodeEscape() throws Malformed {
        char c = hex4();
        if (Character.isLowSurrogate(c)) {
            throw new Malformed("lone surrogate escape");
        }
        if (!Character.isHighSurrogate(c)) {
            return c;
        }
        if (end - pos < 6 || buf[pos] != '\\' || buf[pos + 1] != 'u') {
            throw new Malformed("lone surrogate escape");
        }
        pos += 2;
        char lo = hex4();
        if (!Character.isLowSurrogate(lo)) {
            throw new Malformed("lone surrogate escape");
        }
        return Character.toCodePoint(c, lo);
    }

    private char hex4() throws Malformed {
        if (end - pos < 4) {
            throw new Malformed("bad \\u escape");
        }
        int v = 0;
        for (int i = 0; i < 4; i++) {
            int d = Character.digit(buf[pos + i], 16);
            if (d < 0) {
                throw new Malformed("bad \\u escape");
            }
            v = (v << 4) | d;
        }
        pos += 4;
        return (char) v;
    }

    private void skipString() throws Malformed {
        while (pos < end) {
            byte b = buf[pos];
            if (b == '"') {
                pos++;
                return;
            }
            if (b == '\\') {
                pos++;
                if (pos >= end) {
                    break;
                }
                byte e = buf[pos++];
                switch (e) {
                    case '"': case '\\': case '/': case 'b': case 'f': case 'n': case 'r': case 't':
                        break;
                    case 'u':
                        unicodeEscape();
                        break;
                    default:
                        throw new Malformed("bad escape");
                }
                continue;
            }
            if (b >= 0 && b < 0x20) {
                throw new Malformed("control character in a string");
            }
            pos++;
        }
        throw new Malformed("unterminated string");
    }

    // --- UTF-8 and compact text -------------------------------------------------------------------

    /**
     * True when {@code b} is well-formed UTF-8 (Unicode 3.2+ table 3-7): no overlong forms, no encoded
     * surrogates, nothing above U+10FFFF, no cut sequence. Python's {@code bytes.decode("utf-8")} agrees.
     */
    static boolean validUtf8(byte[] b) {
        int i = 0;
        int n = b.length;
        while (i < n) {
            int c = b[i];
            if (c >= 0) {
                i++;
                continue;
            }
            c &= 0xFF;
            if (c >= 0xC2 && c <= 0xDF) {
                if (i + 1 >= n || (b[i + 1] & 0xC0) != 0x80) {
                    return false;
                }
                i += 2;
            } else if (c >= 0xE0 && c <= 0xEF) {
                if (i + 2 >= n) {
                    return false;
                }
                int c1 = b[i + 1] & 0xFF;
                int lo = c == 0xE0 ? 0xA0 : 0x80;
                int hi = c == 0xED ? 0x9F : 0xBF;
                if (c1 < lo || c1 > hi || (b[i + 2] & 0xC0) != 0x80) {
                    return false;
                }
                i += 3;
            } else if (c >= 0xF0 && c <= 0xF4) {
                if (i + 3 >= n) {
                    return false;
                }
                int c1 = b[i + 1] & 0xFF;
                int lo = c == 0xF0 ? 0x90 : 0x80;
                int hi = c == 0xF4 ? 0x8F : 0xBF;
                if (c1 < lo || c1 > hi || (b[i + 2] & 0xC0) != 0x80 || (b[i + 3] & 0xC0) != 0x80) {
                    return false;
                }
                i += 4;
            } else {
                return false;
            }
        }
        return true;
    }

    /**
     * Compact JSON text of a built value: no white space, keys in their first-seen order, numbers as their
     * literal text, strings escaping only {@code "}, {@code \} and U+0000–U+001F ({@code \n \r \t \b \f},
     * else backslash-u with four lower-case hex digits). Python reference: {@code oracle.compact_json}.
     */
    static void write(Object v, StringBuilder out) {
        if (v instanceof String) {
            quote((String) v, out);
        } else if (v instanceof Num) {
            out.append(((Num) v).text);
        } else if (v instanceof Obj) {
            Obj o = (Obj) v;
            out.append('{');
            for (int i = 0; i < o.keys.size(); i++) {
                if (i > 0) {
                    out.append(',');
                }
                quote(o.keys.get(i), out);
                out.append(':');
                write(o.values.get(i), out);
            }
            out.append('}');
        } else if (v instanceof ArrayList) {
            ArrayList<?> a = (ArrayList<?>) v;
            out.append('[');
            for (int i = 0; i < a.size(); i++) {
                if (i > 0) {
                    out.append(',');
                }
                write(a.get(i), out);
            }
            out.append(']');
        } else if (v instanceof Boolean) {
            out.append(((Boolean) v) ? "true" : "false");
        } else {
            out.append("null");
        }
    }

    private static final char[] HEX = "0123456789abcdef".toCharArray();

    private static void quote(String s, StringBuilder out) {
        out.append('"');
        for (int i = 0; i < s.length(); i++) {
            char c = s.charAt(i);
            switch (c) {
                case '"': out.append("\\\""); break;
                case '\\': out.append("\\\\"); break;
                case '\n': out.append("\\n"); break;
                case '\r': out.append("\\r"); break;
                case '\t': out.append("\\t"); break;
                case '\b': out.append("\\b"); break;
                case '\f': out.append("\\f"); break;
                default:
                    if (c < 0x20) {
                        out.append("\\u00").append(HEX[c >> 4]).append(HEX[c & 0xF]);
                    } else {
                        out.append(c);
                    }
            }
        }
        out.append('"');
    }
}
