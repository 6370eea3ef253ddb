package io.zhongtai.flink.decode;

import java.math.BigDecimal;
import java.math.BigInteger;
import java.math.RoundingMode;
import java.time.DateTimeException;
import java.time.LocalDate;
import java.util.ArrayList;
import java.util.List;

import org.apache.flink.table.annotation.DataTypeHint;
import org.apache.flink.table.data.DecimalData;
import org.apache.flink.table.data.GenericArrayData;
import org.apache.flink.table.data.GenericRowData;
import org.apache.flink.table.data.RowData;
import org.apache.flink.table.data.StringData;
import org.apache.flink.table.functions.ScalarFunction;

/**
 * One strict parse of a raw event record into the decoded event, with its DLQ reason.
 *
 * <p>Call: {@code zt_decode_event(payload, kts, '<config>')}, a ROW, once per record: the SQL puts the
 * call behind its materialisation barrier and reads the fields from that one column (pipelines/decode.py;
 * a table function through {@code LATERAL TABLE} was tried first: each view expansion gets its own
 * correlation variable, so the planner could not reuse the decode across the job's INSERTs and ran it
 * nine times). {@code config} is a JSON object (parsed once per distinct string) with every limit, name
 * and list the checks need: {@code max_bytes}, {@code max_depth}, {@code event_id_chars},
 * {@code event_type_chars}, {@code id_chars}, {@code future_skew_ms}, {@code lateness_ms}, {@code id_types},
 * {@code pii_kinds}, {@code priority}, {@code prop_fields}, and the identity settings of
 * {@link Identifiers} ({@code hmac_ipad}, {@code hmac_opad}, {@code country_code},
 * {@code national_digits}, {@code national_prefix}, {@code blocked_values}, {@code blocked_hashes},
 * {@code blocked_patterns}). The checks and their order are docs/semantics.md's; the Python reference is
 * {@code zhongtai.devtools.generator.oracle.decode_full} (tests/pipeline/test_decode_sql.py and tests/integration/test_decode_jvm.py run
 * both on the same records).
 *
 * <p>Output: {@code reason} = the DLQ reason of the first failing check, NULL for a valid event; when it
 * is set every other field is NULL. {@code person} = the anchor, {@code <type>:<stored value>} of the
 * strongest clean identifier ({@code priority}); {@code ids}: the stored value of each {@code id_types}
 * entry (phone/e-mail keyed hashes), NULL when absent, empty, an object or array, or junk;
 * {@code prop_values}: the text of each {@code prop_fields} entry of {@code props}; {@code amount} = price
 * rounded half-up to cents × qty (qty 1 when absent; 0.00 without a price); {@code props}: the compact JSON
 * text of {@code props} when it is an object, else NULL. Strings of other JSON types: numbers as their
 * literal text, booleans {@code true}/{@code false}. Lengths count code points. Time and memory are linear
 * in the record (every identifier is capped before any normalisation or pattern); it never throws for any
 * input.
 */
public class DecodeEvent extends ScalarFunction {

    private static final long serialVersionUID = 1L;

    /** Integer values beyond ±10^18 are saturated to this (far outside any record timestamp ± skew). */
    private static final long SATURATED = 1L << 62;
    private static final BigDecimal AMOUNT_LIMIT = BigDecimal.TEN.pow(16);
    private static final BigDecimal ZERO_CENTS = BigDecimal.ZERO.setScale(2);

    private static final StringData MALFORMED = StringData.fromString("malformed_json");

    /** Parsed config, cached by the identity (then equality) of the config string. */
    private transient String configText;
    private transient Config config;

    /** The function's configuration: a JSON object (pipelines/decode.py ``decode_config`` writes it). */
    static final class Config {
        final int maxBytes;
        final int maxDepth;
        final int eventIdChars;
        final int eventTypeChars;
        final int idChars;
        final long futureSkewMs;
        final long latenessMs;
        final String[] idTypes;
        final Identifiers.Kind[] idKinds;
        /** Per type: stored as a keyed hash (phone, e-mail, custom types declared {@code hashed}). */
        final boolean[] idHashed;
        /** Indexes into {@link #idTypes}, strongest first: the anchor is the first clean one. */
        final int[] priority;
        final String[] propFields;
        final Identifiers identifiers;
        /** The declared props' checks, in check order (config/schema.yaml via pipelines/decode.py). */
        final PropCheck[] propChecks;
        /** Event types declared in the schema; null when undeclared types are accepted. */
        final java.util.Set<String> declaredEvents;

        Config(String text) {
            StrictJson.Obj m;
            try {
                StrictJson p = new StrictJson(text.getBytes(java.nio.charset.StandardCharsets.UTF_8), 8);
                Object v = p.value(0);
                p.end();
                m = (StrictJson.Obj) v;
            } catch (StrictJson.Malformed | ClassCastException e) {
                throw new IllegalArgumentException("zt_decode_event: the config is not a JSON object: " + text, e);
            }
            maxBytes = (int) num(m, "max_bytes");
            maxDepth = (int) num(m, "max_depth");
            eventIdChars = (int) num(m, "event_id_chars");
            eventTypeChars = (int) num(m, "event_type_chars");
            idChars = (int) num(m, "id_chars");
            futureSkewMs = num(m, "future_skew_ms");
            latenessMs = num(m, "lateness_ms");
            idTypes = strings(m, "id_types").toArray(new String[0]);
            List<String> pii = strings(m, "pii_kinds"); // "<type>:phone" / "<type>:email"
            idKinds = new Identifiers.Kind[idTypes.length];
            idHashed = new boolean[idTypes.length];
            Object customIds = m.get("custom_ids"); // [{"type", "normalise": none|lower, "hashed"}]
            for (int i = 0; i < idTypes.length; i++) {
                idKinds[i] = Identifiers.Kind.PLAIN;
                for (String k : pii) {
                    if (k.equals(idTypes[i] + ":phone")) {
                        idKinds[i] = Identifiers.Kind.PHONE;
                        idHashed[i] = true;
                    } else if (k.equals(idTypes[i] + ":email")) {
                        idKinds[i] = Identifiers.Kind.EMAIL;
                        idHashed[i] = true;
                    }
                }
                if (customIds != null) {
                    for (Object o : (List<?>) customIds) {
                        StrictJson.Obj d = (StrictJson.Obj) o;
                        if (idTypes[i].equals(str(d, "type"))) {
                            idKinds[i] = "lower".equals(str(d, "normalise")) ? Identifiers.Kind.LOWER
                                    : Identifiers.Kind.PLAIN;
                            idHashed[i] = Boolean.TRUE.equals(need(d, "hashed"));
                        }
                    }
                }
            }
            List<String> prio = strings(m, "priority");
            List<Integer> order = new ArrayList<>();
            for (String t : prio) {
                for (int i = 0; i < idTypes.length; i++) {
                    if (idTypes[i].equals(t)) {
                        order.add(i);
                    }
                }
            }
            priority = order.stream().mapToInt(Integer::intValue).toArray();
            propFields = strings(m, "prop_fields").toArray(new String[0]);
            List<PropCheck> checks = new ArrayList<>();
            Object pc = m.get("prop_checks");
            if (pc != null) {
                for (Object o : (List<?>) pc) {
                    StrictJson.Obj d = (StrictJson.Obj) o;
                    checks.add(new PropCheck(str(d, "event"), str(d, "name"), str(d, "type"),
                            Boolean.TRUE.equals(need(d, "required"))));
                }
            }
            propChecks = checks.toArray(new PropCheck[0]);
            Object declared = m.get("declared_events");
            declaredEvents = declared == null || declared == StrictJson.NULL ? null
                    : new java.util.HashSet<>(strings(m, "declared_events"));
            identifiers = new Identifiers(str(m, "hmac_ipad"), str(m, "hmac_opad"), str(m, "country_code"),
                    (int) num(m, "national_digits"), str(m, "national_prefix"), strings(m, "blocked_values"),
                    strings(m, "blocked_hashes"), strings(m, "blocked_patterns"));
        }

        /** One declared prop: applies to event type {@code event} ("*": every type). */
        static final class PropCheck {
            final String event;
            final String name;
            final String type;
            final boolean required;
            final String missing;
            final String wrongType;
            final String outOfRange;

            PropCheck(String event, String name, String type, boolean required) {
                this.event = event;
                this.name = name;
                this.type = type;
                this.required = required;
                this.missing = "missing_field:props." + name;
                this.wrongType = "wrong_type:props." + name;
                this.outOfRange = "out_of_range:props." + name;
                switch (type) {
                    case "string": case "integer": case "decimal": case "boolean": case "timestamp": case "list":
                        break;
                    default:
                        throw new IllegalArgumentException("zt_decode_event: unknown prop type '" + type + "'");
                }
            }
        }

        private static Object need(StrictJson.Obj m, String key) {
            Object v = m.get(key);
            if (v == null) {
                throw new IllegalArgumentException("zt_decode_event: the config lacks '" + key + "'");
            }
            return v;
        }

        private static long num(StrictJson.Obj m, String key) {
            return Long.parseLong(((StrictJson.Num) need(m, key)).text);
        }

        private static String str(StrictJson.Obj m, String key) {
            return (String) need(m, key);
        }

        private static List<String> strings(StrictJson.Obj m, String key) {
            List<String> out = new ArrayList<>();
            for (Object o : (List<?>) need(m, key)) {
                out.add((String) o);
            }
            return out;
        }
    }

    @DataTypeHint(value = "ROW<reason STRING, event_id STRING, event_type STRING, ts_ms BIGINT, person STRING, "
            + "ids ARRAY<STRING>, source STRING, prop_values ARRAY<STRING>, amount DECIMAL(18, 2), props STRING>",
            bridgedTo = RowData.class)
    public RowData eval(byte[] payload, @DataTypeHint(value = "TIMESTAMP_LTZ(3)", bridgedTo = Long.class) Long kts,
                        String configText) {
        Config c = config;
        if (configText != this.configText) {
            if (c == null || !configText.equals(this.configText)) {
                c = config = new Config(configText);
            }
            this.configText = configText;
        }
        return decode(payload, kts == null ? 0L : kts, c);
    }

    /**
     * The time one decode of {@code payload} takes, in nanoseconds (the fuzz test records the largest;
     * the first call per config also parses the config).
     */
    public static long decodeNanos(byte[] payload, long kts, String configText) {
        Config c = new Config(configText);
        long t0 = System.nanoTime();
        decode(payload, kts, c);
        return System.nanoTime() - t0;
    }

    static GenericRowData rejected(StringData reason) {
        GenericRowData row = new GenericRowData(10);
        row.setField(0, reason);
        return row;
    }

    static GenericRowData rejected(String reason) {
        return rejected(StringData.fromString(reason));
    }

    static GenericRowData decode(byte[] payload, long kts, Config c) {
        if (payload == null) {
            return rejected(MALFORMED); // a Kafka tombstone: no value, so not a JSON object
        }
        if (payload.length > c.maxBytes) {
            return rejected("oversized");
        }
        if (!StrictJson.validUtf8(payload)) {
            return rejected("not_utf8");
        }
        Object eventId = null;
        Object eventType = null;
        Object ts = null;
        Object ids = null;
        Object props = null;
        Object source = null;
        StrictJson p = new StrictJson(payload, c.maxDepth);
        try {
            if (!p.startObject()) {
                p.skipDocument(); // the same strict reading of whatever it is, for the record
                return rejected(MALFORMED);
            }
            boolean first = true;
            String key;
            while ((key = p.nextKey(first)) != null) {
                first = false;
                switch (key) {
                    case "event_id": eventId = p.value(1); break;
                    case "event_type": eventType = p.value(1); break;
                    case "ts": ts = p.value(1); break;
                    case "ids": ids = p.value(1); break;
                    case "props": props = p.value(1); break;
                    case "source": source = p.value(1); break;
                    default: p.skip(1);
                }
            }
            p.end();
        } catch (StrictJson.Malformed e) {
            return rejected(MALFORMED);
        }

        if (absentOrEmpty(eventId)) {
            return rejected("missing_field:event_id");
        }
        String id = text(eventId);
        if (id == null || id.codePointCount(0, id.length()) > c.eventIdChars) {
            return rejected("wrong_type:event_id");
        }
        if (absentOrEmpty(eventType)) {
            return rejected("missing_field:event_type");
        }
        String type = text(eventType);
        if (type == null || !eventTypeName(type, c.eventTypeChars)) {
            return rejected("wrong_type:event_type");
        }
        if (ts == null || ts == StrictJson.NULL) {
            return rejected("missing_field:ts");
        }
        Long tsParsed = tsValue(ts);
        if (tsParsed == null) {
            return rejected("wrong_type:ts");
        }
        long tsMs = tsParsed;
        if (ids == null || ids == StrictJson.NULL) {
            return rejected("missing_field:ids");
        }
        if (!(ids instanceof StrictJson.Obj)) {
            return rejected("wrong_type:ids");
        }
        StrictJson.Obj idObj = (StrictJson.Obj) ids;
        String[] raw = new String[c.idTypes.length];
        for (int i = 0; i < c.idTypes.length; i++) {
            String v = text(idObj.get(c.idTypes[i]));
            if (v == null || v.isEmpty()) {
                continue;
            }
            if (v.length() > c.idChars && v.codePointCount(0, v.length()) > c.idChars) {
                return rejected("too_long:ids");
            }
            raw[i] = v;
        }
        // stored form (phone/e-mail: normalised + keyed hash), junk dropped, the anchor = strongest clean one
        StringData[] idValues = new StringData[c.idTypes.length];
        String[] clean = new String[c.idTypes.length];
        for (int i = 0; i < c.idTypes.length; i++) {
            if (raw[i] != null) {
                String stored = c.identifiers.stored(c.idKinds[i], c.idHashed[i], c.idTypes[i], raw[i]);
                if (!c.identifiers.junk(c.idHashed[i], stored)) {
                    clean[i] = stored;
                    idValues[i] = StringData.fromString(stored);
                }
            }
        }
        String person = null;
        for (int i : c.priority) {
            if (clean[i] != null) {
                person = c.idTypes[i] + ":" + clean[i];
                break;
            }
        }
        if (person == null) {
            return rejected("no_identifier");
        }

        StrictJson.Obj propObj = props instanceof StrictJson.Obj ? (StrictJson.Obj) props : null;
        String after = null;
        BigDecimal price = null;
        boolean priceHuge = false;
        long qty = 1;
        boolean qtyHuge = false;
        if (propObj != null) {
            Object pv = propObj.get("price");
            if (pv != null && pv != StrictJson.NULL) {
                String t = pv instanceof StrictJson.Num ? ((StrictJson.Num) pv).text
                        : pv instanceof String && Decimals.isNumber((String) pv) ? (String) pv : null;
                if (t == null) {
                    after = "wrong_type:props.price";
                } else {
                    price = Decimals.cents(t);
                    priceHuge = price == null;
                }
            }
            Object qv = propObj.get("qty");
            if (after == null && qv != null && qv != StrictJson.NULL) {
                String t = qv instanceof StrictJson.Num && ((StrictJson.Num) qv).integer ? ((StrictJson.Num) qv).text
                        : qv instanceof String && Decimals.isInteger((String) qv) ? (String) qv : null;
                if (t == null) {
                    after = "wrong_type:props.qty";
                } else {
                    Long q = Decimals.integer16(t);
                    qtyHuge = q == null;
                    qty = q == null ? 0 : q;
                }
            }
        }
        BigDecimal amount = ZERO_CENTS;
        if (after == null) {
            if (priceHuge || qtyHuge) {
                after = "out_of_range:amount";
            } else if (price != null) {
                amount = price.multiply(BigDecimal.valueOf(qty));
                if (amount.abs().compareTo(AMOUNT_LIMIT) >= 0) {
                    after = "out_of_range:amount";
                    amount = ZERO_CENTS;
                }
            }
        }
        if (after == null && c.declaredEvents != null && !c.declaredEvents.contains(type)) {
            after = "undeclared:event_type";
        }
        if (after == null && c.propChecks.length > 0) {
            after = checkProps(type, propObj, c.propChecks);
        }
        if (after == null) {
            if (tsMs > kts + c.futureSkewMs) {
                after = "future_ts";
            } else if (kts - tsMs > c.latenessMs) {
                after = "late";
            }
        }

        if (after != null) {
            return rejected(after);
        }
        GenericRowData row = new GenericRowData(10);
        row.setField(1, StringData.fromString(id));
        row.setField(2, StringData.fromString(type));
        row.setField(3, tsMs);
        row.setField(4, StringData.fromString(person));
        row.setField(5, new GenericArrayData(idValues));
        row.setField(6, str(text(source)));
        StringData[] propValues = new StringData[c.propFields.length];
        if (propObj != null) {
            for (int i = 0; i < c.propFields.length; i++) {
                propValues[i] = str(text(propObj.get(c.propFields[i])));
            }
        }
        row.setField(7, new GenericArrayData(propValues));
        row.setField(8, DecimalData.fromBigDecimal(amount, 18, 2));
        if (propObj != null) {
            StringBuilder sb = new StringBuilder(64);
            StrictJson.write(propObj, sb);
            row.setField(9, StringData.fromString(sb.toString()));
        }
        return row;
    }

    /**
     * The DLQ reason of the first declared prop of {@code type} that is missing or of the wrong type, else
     * null (Python reference: {@code operators.envelope.check_props}).
     */
    static String checkProps(String type, StrictJson.Obj props, Config.PropCheck[] checks) {
        for (Config.PropCheck pc : checks) {
            if (!"*".equals(pc.event) && !pc.event.equals(type)) {
                continue;
            }
            Object v = props == null ? null : props.get(pc.name);
            if (v == null || v == StrictJson.NULL || ("".equals(v) && "string".equals(pc.type))) {
                if (pc.required) {
                    return pc.missing;
                }
                continue;
            }
            switch (pc.type) {
                case "string":
                    if (text(v) == null) {
                        return pc.wrongType;
                    }
                    break;
                case "integer": {
                    String t = v instanceof StrictJson.Num && ((StrictJson.Num) v).integer ? ((StrictJson.Num) v).text
                            : v instanceof String && Decimals.isInteger((String) v) ? (String) v : null;
                    if (t == null) {
                        return pc.wrongType;
                    }
                    if (Decimals.integer16(t) == null) {
                        return pc.outOfRange;
                    }
                    break;
                }
                case "decimal": {
                    String t = v instanceof StrictJson.Num ? ((StrictJson.Num) v).text
                            : v instanceof String && Decimals.isNumber((String) v) ? (String) v : null;
                    if (t == null) {
                        return pc.wrongType;
                    }
                    if (Decimals.cents(t) == null) {
                        return pc.outOfRange;
                    }
                    break;
                }
                case "boolean":
                    if (!(v instanceof Boolean)) {
                        return pc.wrongType;
                    }
                    break;
                case "timestamp":
                    if (tsValue(v) == null) {
                        return pc.wrongType;
                    }
                    break;
                default: { // list: an array of at most MAX_LIST_ITEMS strings
                    if (!(v instanceof ArrayList) || ((ArrayList<?>) v).size() > MAX_LIST_ITEMS) {
                        return pc.wrongType;
                    }
                    for (Object x : (ArrayList<?>) v) {
                        if (!(x instanceof String)) {
                            return pc.wrongType;
                        }
                    }
                }
            }
        }
        return null;
    }

    /** Longest array a {@code list} prop may hold (config/schema.py MAX_LIST_ITEMS). */
    static final int MAX_LIST_ITEMS = 1000;

    /** Epoch ms of a {@code ts}-like value (an integer, a {@code -?digits} string, or ISO-8601), else null. */
    static Long tsValue(Object v) {
        if (v instanceof StrictJson.Num && ((StrictJson.Num) v).integer) {
            return integerValue(((StrictJson.Num) v).text);
        }
        if (v instanceof String && isEpochText((String) v)) {
            return integerValue((String) v);
        }
        if (v instanceof String) {
            return isoMillis((String) v);
        }
        return null;
    }

    private static StringData str(String s) {
        return s == null ? null : StringData.fromString(s);
    }

    private static boolean absentOrEmpty(Object v) {
        return v == null || v == StrictJson.NULL || "".equals(v);
    }

    /** A string-typed field's text: strings as they are, numbers as their literal, booleans; else null. */
    static String text(Object v) {
        if (v instanceof String) {
            return (String) v;
        }
        if (v instanceof StrictJson.Num) {
            return ((StrictJson.Num) v).text;
        }
        if (v instanceof Boolean) {
            return ((Boolean) v) ? "true" : "false";
        }
        return null;
    }

    /** {@code [a-z][a-z0-9_]*} of at most {@code max} characters. */
    static boolean eventTypeName(String s, int max) {
        int n = s.length();
        if (n == 0 || n > max) {
            return false;
        }
        char c0 = s.charAt(0);
        if (c0 < 'a' || c0 > 'z') {
            return false;
        }
        for (int i = 1; i < n; i++) {
            char c = s.charAt(i);
            if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_')) {
                return false;
            }
        }
        return true;
    }

    /** {@code -?[0-9]+}. */
    static boolean isEpochText(String s) {
        int i = s.startsWith("-") ? 1 : 0;
        if (i == s.length()) {
            return false;
        }
        for (; i < s.length(); i++) {
            char c = s.charAt(i);
            if (c < '0' || c > '9') {
                return false;
            }
        }
        return true;
    }

    /** The value of an integer literal ({@code [+-]?[0-9]+}), saturated to ±2^62 beyond 18 digits. */
    static long integerValue(String s) {
        boolean neg = s.charAt(0) == '-';
        int i = s.charAt(0) == '-' || s.charAt(0) == '+' ? 1 : 0;
        while (i < s.length() - 1 && s.charAt(i) == '0') {
            i++;
        }
        if (s.length() - i > 18) {
            return neg ? -SATURATED : SATURATED;
        }
        long v = Long.parseLong(s.substring(i));
        return neg ? -v : v;
    }

    /**
     * Epoch ms of {@code YYYY-MM-DDTHH:MM:SS[.fff](Z|±HH:MM)}: a real calendar date of years 1–9999, hours
     * 00–23, minutes and seconds 00–59, offsets up to ±23:59; null for anything else.
     */
    static Long isoMillis(String s) {
        int n = s.length();
        boolean frac = n == 24 || n == 29;
        boolean zulu = n == 20 || n == 24;
        if (!(n == 20 || n == 24 || n == 25 || n == 29)) {
            return null;
        }
        if (s.charAt(4) != '-' || s.charAt(7) != '-' || s.charAt(10) != 'T' || s.charAt(13) != ':'
                || s.charAt(16) != ':') {
            return null;
        }
        int year = digits(s, 0, 4);
        int month = digits(s, 5, 2);
        int day = digits(s, 8, 2);
        int hour = digits(s, 11, 2);
        int minute = digits(s, 14, 2);
        int second = digits(s, 17, 2);
        int millis = 0;
        int z = 19;
        if (frac) {
            if (s.charAt(19) != '.') {
                return null;
            }
            millis = digits(s, 20, 3);
            z = 23;
        }
        int offsetMinutes = 0;
        if (zulu) {
            if (s.charAt(z) != 'Z') {
                return null;
            }
        } else {
            char sign = s.charAt(z);
            if ((sign != '+' && sign != '-') || s.charAt(z + 3) != ':') {
                return null;
            }
            int oh = digits(s, z + 1, 2);
            int om = digits(s, z + 4, 2);
            if (oh < 0 || om < 0 || oh > 23 || om > 59) {
                return null;
            }
            offsetMinutes = (oh * 60 + om) * (sign == '-' ? -1 : 1);
        }
        if (year < 1 || month < 0 || day < 0 || hour < 0 || minute < 0 || second < 0 || millis < 0
                || hour > 23 || minute > 59 || second > 59) {
            return null;
        }
        long epochDay;
        try {
            epochDay = LocalDate.of(year, month, day).toEpochDay();
        } catch (DateTimeException e) {
            return null;
        }
        long secs = epochDay * 86_400L + hour * 3_600L + minute * 60L + second - offsetMinutes * 60L;
        return secs * 1000L + millis;
    }

    /** The ASCII digits s[from, from+len) as a number, or -1 when one is not a digit. */
    private static int digits(String s, int from, int len) {
        int v = 0;
        for (int i = from; i < from + len; i++) {
            char c = s.charAt(i);
            if (c < '0' || c > '9') {
                return -1;
            }
            v = v * 10 + (c - '0');
        }
        return v;
    }

    /** Decimal helpers for price and qty (no regular expressions, linear in the text, never huge numbers). */
    static final class Decimals {
        private Decimals() {
        }

        /** {@code [+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?}. */
        static boolean isNumber(String s) {
            int n = s.length();
            int i = 0;
            if (i < n && (s.charAt(i) == '+' || s.charAt(i) == '-')) {
                i++;
            }
            int intStart = i;
            while (i < n && isDigit(s.charAt(i))) {
                i++;
            }
            int intDigits = i - intStart;
            int fracDigits = 0;
            if (i < n && s.charAt(i) == '.') {
                i++;
                int fs = i;
                while (i < n && isDigit(s.charAt(i))) {
                    i++;
                }
                fracDigits = i - fs;
            }
            if (intDigits == 0 && fracDigits == 0) {
                return false;
            }
            if (i < n && (s.charAt(i) == 'e' || s.charAt(i) == 'E')) {
                i++;
                if (i < n && (s.charAt(i) == '+' || s.charAt(i) == '-')) {
                    i++;
                }
                int es = i;
                while (i < n && isDigit(s.charAt(i))) {
                    i++;
                }
                if (i == es) {
                    return false;
                }
            }
            return i == n;
        }

        /** {@code [+-]?[0-9]+}. */
        static boolean isInteger(String s) {
            int i = s.startsWith("+") || s.startsWith("-") ? 1 : 0;
            if (i == s.length()) {
                return false;
            }
            for (; i < s.length(); i++) {
                if (!isDigit(s.charAt(i))) {
                    return false;
                }
            }
            return true;
        }

        private static boolean isDigit(char c) {
            return c >= '0' && c <= '9';
        }

        /** An integer literal's value when |v| < 10^16, else null. */
        static Long integer16(String s) {
            boolean neg = s.charAt(0) == '-';
            int i = s.charAt(0) == '-' || s.charAt(0) == '+' ? 1 : 0;
            while (i < s.length() - 1 && s.charAt(i) == '0') {
                i++;
            }
            if (s.length() - i > 16) {
                return null;
            }
            long v = Long.parseLong(s.substring(i));
            return neg ? -v : v;
        }

        /**
         * A number (text passing {@link #isNumber}) rounded half-up to cents, or null when its absolute value
         * rounds to 10^16 or more. Works on the digits and a saturated exponent, so {@code 1e999999999999}
         * and {@code 1e-999999999999} cost no more than {@code 1}.
         */
        static BigDecimal cents(String s) {
            int n = s.length();
            int i = 0;
            boolean neg = false;
            if (s.charAt(0) == '+' || s.charAt(0) == '-') {
                neg = s.charAt(0) == '-';
                i = 1;
            }
            StringBuilder digits = new StringBuilder(n);
            int fracDigits = 0;
            boolean inFrac = false;
            for (; i < n; i++) {
                char ch = s.charAt(i);
                if (ch == '.') {
                    inFrac = true;
                } else if (ch == 'e' || ch == 'E') {
                    break;
                } else {
                    if (digits.length() > 0 || ch != '0') {
                        digits.append(ch);
                    }
                    if (inFrac) {
                        fracDigits++;
                    }
                }
            }
            long exp = 0;
            if (i < n) {
                i++;
                boolean eneg = false;
                if (s.charAt(i) == '+' || s.charAt(i) == '-') {
                    eneg = s.charAt(i) == '-';
                    i++;
                }
                for (; i < n; i++) {
                    exp = Math.min(exp * 10 + (s.charAt(i) - '0'), 1_000_000_000_000L);
                }
                if (eneg) {
                    exp = -exp;
                }
            }
            if (digits.length() == 0) {
                return ZERO_CENTS;
            }
            // value = D × 10^(exp − fracDigits), D has digits.length() significant digits
            long scale = fracDigits - exp;
            long adjusted = digits.length() - 1 - scale; // position of the leading digit
            if (adjusted >= 16) {
                return null;
            }
            if (adjusted <= -4) {
                return ZERO_CENTS; // |v| < 0.001: rounds to 0.00
            }
            BigDecimal v = new BigDecimal(new BigInteger(digits.toString()), (int) scale).setScale(2, RoundingMode.HALF_UP);
            if (neg) {
                v = v.negate();
            }
            return v.abs().compareTo(AMOUNT_LIMIT) >= 0 ? null : v;
        }
    }
}
