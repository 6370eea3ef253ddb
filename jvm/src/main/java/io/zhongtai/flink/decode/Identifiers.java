package io.zhongtai.flink.decode;

import java.nio.charset.StandardCharsets;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.text.Normalizer;
import java.util.HashSet;
import java.util.List;
import java.util.Locale;
import java.util.Set;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * The stored form of an event's identifiers and whether each is static junk, configured from outside.
 *
 * <p>Python references: {@code operators.pii.pseudonymise} (NFKC, then phone: ASCII digits, a leading
 * {@code 00} dropped, the country code before a national number of {@code national_digits} digits
 * starting with {@code national_prefix}, written {@code +<digits>}; e-mail: ASCII white space trimmed,
 * lower-cased; then HMAC-SHA256 over {@code "<type>:<normalised>"} as lower-case hex; custom types as
 * declared in config/schema.yaml) and
 * {@code operators.identity.rules.IdentityRules.is_junk} (the stored value in the blocked hashes, or
 * trimmed of ASCII white space and lower-cased in the blocked values or fully matching a blocked pattern,
 * {@code .} matching every character). Values reach this class already capped at
 * {@code identity.max_identifier_length} characters, so no pattern can run long. Not thread-safe (one
 * instance per function instance).
 */
final class Identifiers {

    /**
     * How a type's raw value is normalised: as sent, phone, e-mail, or {@code LOWER} (a custom type
     * declared {@code normalise: lower}: e-mail's normalisation). Phone and e-mail are always hashed.
     */
    enum Kind { PLAIN, PHONE, EMAIL, LOWER }

    private final byte[] ipad;
    private final byte[] opad;
    private final String countryCode;
    private final int nationalDigits;
    private final char nationalPrefix;
    private final Set<String> blockedValues;
    private final Set<String> blockedHashes;
    private final Matcher blockedPattern;
    private final MessageDigest sha256;

    Identifiers(String ipadHex, String opadHex, String countryCode, int nationalDigits, String nationalPrefix,
                List<String> blockedValues, List<String> blockedHashes, List<String> blockedPatterns) {
        this.ipad = unhex(ipadHex);
        this.opad = unhex(opadHex);
        this.countryCode = countryCode;
        this.nationalDigits = nationalDigits;
        this.nationalPrefix = nationalPrefix.isEmpty() ? '\0' : nationalPrefix.charAt(0);
        this.blockedValues = new HashSet<>(blockedValues);
        this.blockedHashes = new HashSet<>(blockedHashes);
        StringBuilder joined = new StringBuilder();
        for (String p : blockedPatterns) {
            joined.append(joined.length() == 0 ? "" : "|").append("(?:").append(p).append(')');
        }
        this.blockedPattern = joined.length() == 0 ? null : Pattern.compile(joined.toString(), Pattern.DOTALL).matcher("");
        try {
            this.sha256 = MessageDigest.getInstance("SHA-256");
        } catch (NoSuchAlgorithmException e) {
            throw new IllegalStateException("the JVM has no SHA-256", e);
        }
    }

    /**
     * The stored form of a raw value of type {@code kind} named {@code type}; {@code hashed}: the keyed
     * hash of {@code "<type>:<normalised>"} (always for phone and e-mail).
     */
    String stored(Kind kind, boolean hashed, String type, String raw) {
        switch (kind) {
            case PHONE:
                return hmacHex(type + ":" + phone(raw));
            case EMAIL:
                return hmacHex(type + ":" + email(raw));
            case LOWER:
                return hashed ? hmacHex(type + ":" + email(raw)) : email(raw);
            default:
                return hashed ? hmacHex(type + ":" + raw) : raw;
        }
    }

    /** True when the stored value is static junk ({@code hashed}: the type is stored as a keyed hash). */
    boolean junk(boolean hashed, String stored) {
        if (hashed && blockedHashes.contains(stored)) {
            return true;
        }
        String v = trimAscii(stored).toLowerCase(Locale.ROOT);
        if (blockedValues.contains(v)) {
            return true;
        }
        return blockedPattern != null && blockedPattern.reset(v).matches();
    }

    String phone(String raw) {
        String s = nfkc(raw);
        StringBuilder d = new StringBuilder(s.length() + countryCode.length() + 1);
        for (int i = 0; i < s.length(); i++) {
            char c = s.charAt(i);
            if (c >= '0' && c <= '9') {
                d.append(c);
            }
        }
        int from = d.length() >= 2 && d.charAt(0) == '0' && d.charAt(1) == '0' ? 2 : 0;
        String digits = d.substring(from);
        if (digits.length() == nationalDigits && !digits.isEmpty() && digits.charAt(0) == nationalPrefix) {
            digits = countryCode + digits;
        }
        return "+" + digits;
    }

    /**
     * NFKC, ASCII white space trimmed, lower-cased, then every final sigma as sigma: the one lower-casing
     * that depends on context, and Java and Python read its context differently ({@code "a0Σ\u000bf"}).
     */
    static String email(String raw) {
        return trimAscii(nfkc(raw)).toLowerCase(Locale.ROOT).replace('\u03c2', '\u03c3');
    }

    /** Unicode NFKC; ASCII is its own form (checked first, it is the common case). */
    static String nfkc(String s) {
        for (int i = 0; i < s.length(); i++) {
            if (s.charAt(i) >= 0x80) {
                return Normalizer.normalize(s, Normalizer.Form.NFKC);
            }
        }
        return s;
    }

    /** Without leading and trailing ASCII white space (space, tab, LF, CR, FF, VT). */
    static String trimAscii(String s) {
        int a = 0;
        int b = s.length();
        while (a < b && isAsciiSpace(s.charAt(a))) {
            a++;
        }
        while (b > a && isAsciiSpace(s.charAt(b - 1))) {
            b--;
        }
        return a == 0 && b == s.length() ? s : s.substring(a, b);
    }

    private static boolean isAsciiSpace(char c) {
        return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == 0x0B;
    }

    private static final char[] HEX = "0123456789abcdef".toCharArray();

    /** HMAC-SHA256 (RFC 2104) with the pre-padded key, as lower-case hex. */
    String hmacHex(String message) {
        sha256.reset();
        sha256.update(ipad);
        sha256.update(message.getBytes(StandardCharsets.UTF_8));
        byte[] inner = sha256.digest();
        sha256.update(opad);
        sha256.update(inner);
        byte[] mac = sha256.digest();
        char[] out = new char[mac.length * 2];
        for (int i = 0; i < mac.length; i++) {
            out[2 * i] = HEX[(mac[i] >> 4) & 0xF];
            out[2 * i + 1] = HEX[mac[i] & 0xF];
        }
        return new String(out);
    }

    private static byte[] unhex(String hex) {
        byte[] out = new byte[hex.length() / 2];
        for (int i = 0; i < out.length; i++) {
            out[i] = (byte) Integer.parseInt(hex.substring(2 * i, 2 * i + 2), 16);
        }
        return out;
    }
}
