//! The canonical serialisation that event hashes are computed over.
//!
//! Canonical JSON here means: UTF-8; no whitespace outside strings; object
//! keys sorted by their UTF-8 bytes (equal to code-point order); strings
//! escaped minimally as `serde_json` does (`\"`, `\\`, `\b \f \n \r \t`,
//! other control characters as `\u00xx`, everything else literal); integers
//! in plain decimal; other numbers in the shortest form that reads back to
//! the same `f64` (`serde_json`/`ryu`); `null` for absent optional fields,
//! which are never omitted. Timestamps are strings in RFC 3339 UTC with
//! exactly six fractional digits (`2025-01-02T03:04:05.000123Z`), hashes are
//! lower-case hex. The rules match RFC 8785 except for number formatting
//! and key order of non-BMP characters, neither of which occurs in practice.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::fmt;

/// Appends the canonical form of `value` to `out`.
pub fn write_canonical(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        // Same digits as `Number`'s Display (itoa/ryu), without a String.
        Value::Number(n) => {
            serde_json::to_writer(&mut *out, n).expect("writing a number into a Vec cannot fail")
        }
        Value::String(s) => write_string(s, out),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(item, out);
            }
            out.push(b']');
        }
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push(b'{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_string(k, out);
                out.push(b':');
                write_canonical(v, out);
            }
            out.push(b'}');
        }
    }
}

/// Appends `s` as a canonical JSON string.
pub fn write_string(s: &str, out: &mut Vec<u8>) {
    // serde_json's string escaping is the documented canonical escaping.
    serde_json::to_writer(&mut *out, s).expect("writing a string into a Vec cannot fail");
}

/// The canonical bytes of `value`.
pub fn canonical_bytes(value: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    write_canonical(value, &mut out);
    out
}

/// Formats a timestamp the canonical way (UTC, six fractional digits).
pub fn format_time(t: &DateTime<Utc>) -> String {
    let mut out = Vec::with_capacity(27);
    push_time(t, &mut out);
    String::from_utf8(out).expect("a formatted time is ASCII")
}

/// Appends the canonical form of a timestamp (without quotes); chrono's
/// `format` parses its pattern on every call, which the audit writer did
/// for every event.
pub fn push_time(t: &DateTime<Utc>, out: &mut Vec<u8>) {
    use chrono::{Datelike, Timelike};
    let year = t.year();
    if !(0..=9999).contains(&year) {
        // `%Y` writes a sign and more digits outside 0..=9999: keep its exact form.
        out.extend_from_slice(t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string().as_bytes());
        return;
    }
    // A leap second shows as nanosecond >= 1e9: `%S` prints it as second 60
    // and `%.6f` the rest modulo 1e9.
    let leap = t.nanosecond() / 1_000_000_000;
    let micros = (t.nanosecond() % 1_000_000_000) / 1_000;
    push_digits(year as u32, 4, out);
    out.push(b'-');
    push_digits(t.month(), 2, out);
    out.push(b'-');
    push_digits(t.day(), 2, out);
    out.push(b'T');
    push_digits(t.hour(), 2, out);
    out.push(b':');
    push_digits(t.minute(), 2, out);
    out.push(b':');
    push_digits(t.second() + leap, 2, out);
    out.push(b'.');
    push_digits(micros, 6, out);
    out.push(b'Z');
}

/// Appends `n` zero-padded to `width` decimal digits (`n` fits in them).
fn push_digits(mut n: u32, width: usize, out: &mut Vec<u8>) {
    let start = out.len();
    out.resize(start + width, b'0');
    for slot in out[start..].iter_mut().rev() {
        *slot = b'0' + (n % 10) as u8;
        n /= 10;
    }
}

/// Appends `bytes` as lower-case hex.
pub fn push_hex(bytes: &[u8], out: &mut Vec<u8>) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    out.reserve(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)]);
        out.push(DIGITS[usize::from(b & 0xf)]);
    }
}

/// Replaces NUL characters in every string (keys included) with U+FFFD,
/// because PostgreSQL's `jsonb` and `text` cannot store them; done before
/// hashing so the stored value and the hash agree.
pub fn strip_nul(value: &mut Value) {
    match value {
        Value::String(s) => strip_nul_str(s),
        Value::Array(items) => items.iter_mut().for_each(strip_nul),
        Value::Object(map) => {
            if map.keys().any(|k| k.contains('\0')) {
                let old = std::mem::take(map);
                for (mut k, v) in old {
                    strip_nul_str(&mut k);
                    map.insert(k, v);
                }
            }
            map.values_mut().for_each(strip_nul);
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

/// Replaces NUL characters in `s` with U+FFFD.
pub fn strip_nul_str(s: &mut String) {
    if s.contains('\0') {
        *s = s.replace('\0', "\u{FFFD}");
    }
}

/// A SHA-256 digest; serialised as lower-case hex.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Hash32(pub [u8; 32]);

impl Hash32 {
    /// The all-zero hash that precedes the first event of a stream.
    pub const GENESIS: Hash32 = Hash32([0; 32]);

    /// SHA-256 of `bytes`.
    pub fn digest(bytes: &[u8]) -> Self {
        Self(Sha256::digest(bytes).into())
    }

    /// Parses 32 raw bytes (as stored in `bytea`).
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        <[u8; 32]>::try_from(bytes).ok().map(Self)
    }

    /// Lower-case hex.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Debug for Hash32 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash32({})", self.to_hex())
    }
}

impl fmt::Display for Hash32 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl Serialize for Hash32 {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for Hash32 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let bytes = hex::decode(&s).map_err(serde::de::Error::custom)?;
        Hash32::from_slice(&bytes).ok_or_else(|| serde::de::Error::custom("hash must be 32 bytes"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sorts_keys_and_drops_whitespace() {
        let v = json!({"b": 1, "a": {"z": [1, 2.5, "x"], "y": null}, "é": true, "B": false});
        assert_eq!(
            String::from_utf8(canonical_bytes(&v)).unwrap(),
            r#"{"B":false,"a":{"y":null,"z":[1,2.5,"x"]},"b":1,"é":true}"#
        );
    }

    #[test]
    fn escapes_minimally() {
        let v = json!("q\"b\\n\nt\tc\u{1}ü");
        assert_eq!(
            String::from_utf8(canonical_bytes(&v)).unwrap(),
            "\"q\\\"b\\\\n\\nt\\tc\\u0001ü\""
        );
    }

    #[test]
    fn numbers_survive_a_text_round_trip() {
        for text in [
            "0.1",
            "1.0",
            "1e-7",
            "123456789012",
            "-5",
            "0.30000000000000004",
        ] {
            let v: Value = serde_json::from_str(text).unwrap();
            let again: Value = serde_json::from_slice(&canonical_bytes(&v)).unwrap();
            assert_eq!(canonical_bytes(&v), canonical_bytes(&again), "{text}");
        }
    }

    #[test]
    fn strips_nul_everywhere() {
        let mut v = json!({"a\u{0}": ["x\u{0}y"]});
        strip_nul(&mut v);
        assert_eq!(v, json!({"a\u{FFFD}": ["x\u{FFFD}y"]}));
    }

    #[test]
    fn time_has_six_digits() {
        let t = DateTime::parse_from_rfc3339("2025-01-02T03:04:05.1Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(format_time(&t), "2025-01-02T03:04:05.100000Z");
    }
}
