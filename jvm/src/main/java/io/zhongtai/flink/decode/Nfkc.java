package io.zhongtai.flink.decode;

import java.text.Normalizer;

import org.apache.flink.table.functions.ScalarFunction;

/**
 * {@code zt_nfkc(s)}: Unicode NFKC normalisation (full-width digits and letters become ASCII, ligatures
 * split, ...); NULL stays NULL. Python reference: {@code unicodedata.normalize("NFKC", s)} (Java 17 knows
 * Unicode 13, Python 3.11 Unicode 14: characters new in 14 may differ).
 */
public class Nfkc extends ScalarFunction {

    private static final long serialVersionUID = 1L;

    public String eval(String s) {
        if (s == null) {
            return null;
        }
        for (int i = 0; i < s.length(); i++) {
            if (s.charAt(i) >= 0x80) {
                return Normalizer.normalize(s, Normalizer.Form.NFKC);
            }
        }
        return s; // ASCII is its own NFKC form
    }
}
