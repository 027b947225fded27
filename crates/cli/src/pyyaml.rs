//! YAML exactly as the official CLI prints it (`yaml.safe_dump(data, sort_keys=False)`,
//! PyYAML defaults) for JSON data: block style, sequences not indented under their key,
//! strings quoted when YAML 1.1 would read them as something else (`'0'`, `'yes'`,
//! timestamps), single quotes unless a character needs escaping, non-ASCII escaped.
//! Long plain and single-quoted values are folded at single spaces past column 80, as
//! PyYAML's emitter does (`width` 80). Not reproduced: folding of double-quoted strings.

use serde_json::Value;

pub fn dump(value: &Value) -> String {
    let mut out = String::new();
    match value {
        Value::Object(m) if !m.is_empty() => mapping(&mut out, value, 0),
        Value::Array(a) if !a.is_empty() => sequence(&mut out, value, 0),
        Value::Object(_) => out.push_str("{}\n"),
        Value::Array(_) => out.push_str("[]\n"),
        // A bare scalar document ends with an explicit end marker.
        scalar_value => {
            out.push_str(&scalar(scalar_value));
            out.push_str("\n...\n");
        }
    }
    out
}

fn pad(n: usize) -> String {
    " ".repeat(n)
}

fn is_empty_collection(v: &Value) -> bool {
    matches!(v, Value::Object(m) if m.is_empty()) || matches!(v, Value::Array(a) if a.is_empty())
}

/// A block mapping whose keys start at `indent` (the first key's indentation is already
/// written by the caller when it follows `- `).
fn mapping(out: &mut String, value: &Value, indent: usize) {
    let Value::Object(map) = value else { return };
    for (i, (k, v)) in map.iter().enumerate() {
        if i > 0 {
            out.push_str(&pad(indent));
        }
        out.push_str(&string(k));
        out.push(':');
        match v {
            Value::Object(m) if !m.is_empty() => {
                out.push('\n');
                out.push_str(&pad(indent + 2));
                mapping(out, v, indent + 2);
            }
            Value::Array(a) if !a.is_empty() => {
                out.push('\n');
                out.push_str(&pad(indent));
                sequence(out, v, indent);
            }
            _ => {
                out.push(' ');
                push_value(out, v, indent + 2);
            }
        }
    }
}

/// A block sequence whose dashes sit at `indent` (the first dash's indentation is already
/// written).
fn sequence(out: &mut String, value: &Value, indent: usize) {
    let Value::Array(items) = value else { return };
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push_str(&pad(indent));
        }
        out.push_str("- ");
        match item {
            Value::Object(m) if !m.is_empty() => mapping(out, item, indent + 2),
            Value::Array(a) if !a.is_empty() => sequence(out, item, indent + 2),
            _ => push_value(out, item, indent + 2),
        }
    }
}

/// PyYAML's preferred line width.
const BEST_WIDTH: usize = 80;

/// A value scalar and its line end. A plain or single-quoted string is folded: a single
/// space after a word that ends past column 80 becomes a line break and `indent` spaces.
fn push_value(out: &mut String, v: &Value, indent: usize) {
    let text = scalar(v);
    if !v.is_string() || text.starts_with('"') {
        out.push_str(&text);
        out.push('\n');
        return;
    }
    let mut column = out[out.rfind('\n').map_or(0, |i| i + 1)..].chars().count();
    let chars: Vec<char> = text.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        let single_space = c == ' '
            && i > 0
            && chars[i - 1] != ' '
            && chars.get(i + 1).is_some_and(|n| *n != ' ')
            // Not the first or last character of a quoted string's content.
            && !(text.starts_with('\'') && (i == 1 || i + 2 == chars.len()));
        if single_space && column > BEST_WIDTH {
            out.push('\n');
            out.push_str(&pad(indent));
            column = indent;
        } else {
            out.push(c);
            column += 1;
        }
    }
    out.push('\n');
}

fn scalar(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) if n.is_f64() => float(n.as_f64().unwrap_or_default()),
        Value::Number(n) => n.to_string(),
        Value::String(s) => string(s),
        c if is_empty_collection(c) => {
            if c.is_object() {
                "{}".into()
            } else {
                "[]".into()
            }
        }
        _ => String::new(),
    }
}

/// Python's `repr(float)` as PyYAML writes it.
fn float(f: f64) -> String {
    if f.is_nan() {
        return ".nan".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { ".inf".into() } else { "-.inf".into() };
    }
    let abs = f.abs();
    let repr = if abs != 0.0 && !(1e-4..1e16).contains(&abs) {
        let s = format!("{f:e}");
        let (mantissa, exp) = s.split_once('e').unwrap_or((&s, "0"));
        let exp: i32 = exp.parse().unwrap_or(0);
        let mantissa = if mantissa.contains('.') { mantissa.to_owned() } else { format!("{mantissa}.0") };
        format!("{mantissa}e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.abs())
    } else {
        let s = format!("{f:?}");
        if s.contains('.') {
            s
        } else {
            format!("{s}.0")
        }
    };
    repr
}

fn string(s: &str) -> String {
    if s.chars().any(|c| !(c == ' ' || c.is_ascii_graphic())) {
        return double_quoted(s);
    }
    if plain_ok(s) {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', "''"))
    }
}

fn double_quoted(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\0' => out.push_str("\\0"),
            c if c == ' ' || c.is_ascii_graphic() => out.push(c),
            c if (c as u32) <= 0xFF => out.push_str(&format!("\\x{:02X}", c as u32)),
            c if (c as u32) <= 0xFFFF => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push_str(&format!("\\U{:08X}", c as u32)),
        }
    }
    out.push('"');
    out
}

/// Whether PyYAML would write `s` unquoted: not something YAML 1.1 resolves to another
/// type, and no indicator where YAML would read one.
fn plain_ok(s: &str) -> bool {
    if s.is_empty() || resolves_to_other_type(s) {
        return false;
    }
    let first = s.chars().next().unwrap_or(' ');
    if s.starts_with(' ') || s.ends_with(' ') {
        return false;
    }
    if "#,[]{}&*!|>'\"%@`".contains(first) {
        return false;
    }
    let chars: Vec<char> = s.chars().collect();
    if "-?:".contains(first) && chars.get(1).is_none_or(|c| *c == ' ') {
        return false;
    }
    for (i, c) in chars.iter().enumerate() {
        let next = chars.get(i + 1);
        if *c == ':' && next.is_none_or(|n| *n == ' ') {
            return false;
        }
        if *c == '#' && i > 0 && chars[i - 1] == ' ' {
            return false;
        }
    }
    true
}

fn resolves_to_other_type(s: &str) -> bool {
    const BOOLS: &[&str] = &[
        "yes", "Yes", "YES", "no", "No", "NO", "true", "True", "TRUE", "false", "False", "FALSE", "on", "On", "ON",
        "off", "Off", "OFF",
    ];
    const NULLS: &[&str] = &["~", "null", "Null", "NULL"];
    BOOLS.contains(&s) || NULLS.contains(&s) || s == "<<" || s == "=" || is_int(s) || is_float(s) || is_timestamp(s)
}

fn digits_(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_digit() || c == '_')
}

fn unsign(s: &str) -> &str {
    s.strip_prefix(['-', '+']).unwrap_or(s)
}

fn is_sexagesimal(s: &str) -> bool {
    let mut parts = s.split(':');
    let head = parts.next().unwrap_or("");
    let rest: Vec<&str> = parts.collect();
    !rest.is_empty()
        && head.starts_with(|c: char| ('1'..='9').contains(&c))
        && digits_(head)
        && rest.iter().all(|p| {
            !p.is_empty()
                && p.len() <= 2
                && p.chars().all(|c| c.is_ascii_digit())
                && p.chars().next().is_some_and(|c| c <= '5' || p.len() == 1)
        })
}

fn is_int(s: &str) -> bool {
    let u = unsign(s);
    if let Some(b) = u.strip_prefix("0b") {
        return !b.is_empty() && b.chars().all(|c| c == '0' || c == '1' || c == '_');
    }
    if let Some(h) = u.strip_prefix("0x") {
        return !h.is_empty() && h.chars().all(|c| c.is_ascii_hexdigit() || c == '_');
    }
    if u == "0" {
        return true;
    }
    if let Some(octal) = u.strip_prefix('0') {
        return !octal.is_empty() && octal.chars().all(|c| ('0'..='7').contains(&c) || c == '_');
    }
    (u.starts_with(|c: char| ('1'..='9').contains(&c)) && digits_(u)) || is_sexagesimal(u)
}

fn is_float(s: &str) -> bool {
    let u = unsign(s);
    if matches!(u, ".inf" | ".Inf" | ".INF") || matches!(s, ".nan" | ".NaN" | ".NAN") {
        return true;
    }
    let (mantissa, exp) = match u.find(['e', 'E']) {
        Some(i) => (&u[..i], Some(&u[i + 1..])),
        None => (u, None),
    };
    if let Some(e) = exp {
        let e_digits = e.strip_prefix(['-', '+']);
        if e_digits.is_none_or(|d| d.is_empty() || !d.chars().all(|c| c.is_ascii_digit())) {
            return false;
        }
    }
    if let Some((int, frac)) = mantissa.split_once('.') {
        let frac_ok = frac.chars().all(|c| c.is_ascii_digit() || c == '_');
        if int.is_empty() {
            return frac.starts_with(|c: char| c.is_ascii_digit()) && frac_ok;
        }
        if int.contains(':') && exp.is_none() {
            return is_sexagesimal(int) && frac_ok;
        }
        return int.starts_with(|c: char| c.is_ascii_digit()) && digits_(int) && frac_ok;
    }
    false
}

fn is_timestamp(s: &str) -> bool {
    let b = s.as_bytes();
    let d = |i: usize| b.get(i).is_some_and(u8::is_ascii_digit);
    if !(d(0) && d(1) && d(2) && d(3) && b.get(4) == Some(&b'-')) {
        return false;
    }
    // YYYY-M[M]-D[D]
    let mut i = 5;
    let take_1_2 = |i: &mut usize| {
        if !d(*i) {
            return false;
        }
        *i += 1;
        if d(*i) {
            *i += 1;
        }
        true
    };
    if !take_1_2(&mut i) || b.get(i) != Some(&b'-') {
        return false;
    }
    i += 1;
    if !take_1_2(&mut i) {
        return false;
    }
    if i == b.len() {
        // A bare date only when it is exactly YYYY-MM-DD.
        return b.len() == 10;
    }
    match b.get(i) {
        Some(b'T' | b't') => i += 1,
        Some(b' ' | b'\t') => {
            while matches!(b.get(i), Some(b' ' | b'\t')) {
                i += 1;
            }
        }
        _ => return false,
    }
    if !take_1_2(&mut i)
        || b.get(i) != Some(&b':')
        || !(d(i + 1) && d(i + 2))
        || b.get(i + 3) != Some(&b':')
        || !(d(i + 4) && d(i + 5))
    {
        return false;
    }
    i += 6;
    if b.get(i) == Some(&b'.') {
        i += 1;
        while d(i) {
            i += 1;
        }
    }
    while matches!(b.get(i), Some(b' ' | b'\t')) {
        i += 1;
    }
    match b.get(i) {
        None => true,
        Some(b'Z') => i + 1 == b.len(),
        Some(b'+' | b'-') => {
            i += 1;
            if !take_1_2(&mut i) {
                return false;
            }
            if b.get(i) == Some(&b':') {
                i += 1;
                if !(d(i) && d(i + 1)) {
                    return false;
                }
                i += 2;
            }
            i == b.len()
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn dumps_like_pyyaml_safe_dump() {
        // Expected strings produced by PyYAML 6 `safe_dump(v, sort_keys=False)`.
        let v = json!({"pricing": [{"id": "p-1", "units": "0", "ok": true, "n": null, "f": 30.0,
            "at": "2026-11-25T08:46:01.813Z", "m": {"a": []}, "s": "yes", "q": "it's", "c": "a: b",
            "u": "café", "e": "", "list": ["x", 1]}], "empty": {}});
        let expected = "pricing:\n- id: p-1\n  units: '0'\n  ok: true\n  n: null\n  f: 30.0\n  at: '2026-11-25T08:46:01.813Z'\n  m:\n    a: []\n  s: 'yes'\n  q: it's\n  c: 'a: b'\n  u: \"caf\\xE9\"\n  e: ''\n  list:\n  - x\n  - 1\nempty: {}\n";
        assert_eq!(dump(&v), expected);
        assert_eq!(dump(&json!(1e-5)), "1.0e-05\n...\n");
        let strings =
            json!(["012", "2026-01-01", "- a", "#x", "a #b", "x:", "1:30", "1_000", ".5", "1e5", "1.0e+5", "~", "0o7"]);
        assert_eq!(
            dump(&strings),
            "- '012'\n- '2026-01-01'\n- '- a'\n- '#x'\n- 'a #b'\n- 'x:'\n- '1:30'\n- '1_000'\n- '.5'\n- 1e5\n- '1.0e+5'\n- '~'\n- 0o7\n"
        );
    }

    #[test]
    fn long_values_fold_like_pyyaml() {
        // Expected string produced by PyYAML 6 `safe_dump(v, sort_keys=False)`.
        let v: Value = serde_json::from_str(r#"{"warnings": ["Local readiness only. `tm doctor` does not live-validate the current Control Plane token or inference endpoint.", "x  word word word word word word word word word word word word word word word word word word word word word word word word word word word word word word "], "nested": {"deep": {"text": "it's a b a b a b a b a b a b a b a b a b a b a b a b a b a b a b a b a b a b a b a b a b a b a b a b a b a b a b a b a b a b a b a b a b a b a b a b a b a b a b a b end", "two": "aa  bb aa  bb aa  bb aa  bb aa  bb aa  bb aa  bb aa  bb aa  bb aa  bb aa  bb aa  bb aa  bb aa  bb aa  bb aa  bb aa  bb aa  bb aa  bb aa  bb "}}, "list": [{"k": "one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen"}]}"#).unwrap();
        let expected = "warnings:\n- Local readiness only. `tm doctor` does not live-validate the current Control Plane\n  token or inference endpoint.\n- 'x  word word word word word word word word word word word word word word word word\n  word word word word word word word word word word word word word word '\nnested:\n  deep:\n    text: it's a b a b a b a b a b a b a b a b a b a b a b a b a b a b a b a b a b\n      a b a b a b a b a b a b a b a b a b a b a b a b a b a b a b a b a b a b a b\n      a b a b a b a b end\n    two: 'aa  bb aa  bb aa  bb aa  bb aa  bb aa  bb aa  bb aa  bb aa  bb aa  bb aa  bb\n      aa  bb aa  bb aa  bb aa  bb aa  bb aa  bb aa  bb aa  bb aa  bb '\nlist:\n- k: one two three four five six seven eight nine ten eleven twelve thirteen fourteen\n    fifteen\n";
        assert_eq!(dump(&v), expected);
    }
}
