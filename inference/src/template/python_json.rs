//! `json.dumps` as Hugging Face's `tojson` filter calls it: `ensure_ascii=False`,
//! separators `", "`/`": "` (or `","` plus newlines with `indent`), key order kept.

use super::python_repr::float_repr;
use minijinja::value::{Value, ValueKind};
use std::fmt::Write;

/// The `json.dumps` keyword arguments the `tojson` filter accepts.
#[derive(Debug, Clone)]
pub(crate) struct DumpOptions {
    /// Text repeated once per nesting level; `None` means one line.
    pub indent: Option<String>,
    /// Escape every non-ASCII character as `\uXXXX`.
    pub ensure_ascii: bool,
    /// Between items (`", "` on one line, `","` when indenting).
    pub item_separator: String,
    /// Between a key and its value.
    pub key_separator: String,
    /// Sort object keys instead of keeping their order.
    pub sort_keys: bool,
}

impl Default for DumpOptions {
    fn default() -> Self {
        Self::new(None, None)
    }
}

impl DumpOptions {
    /// Python's defaults: separators depend on whether `indent` is set.
    pub fn new(indent: Option<String>, separators: Option<(String, String)>) -> Self {
        let (item_separator, key_separator) = separators.unwrap_or_else(|| {
            let item = if indent.is_some() { "," } else { ", " };
            (item.to_owned(), ": ".to_owned())
        });
        Self {
            indent,
            ensure_ascii: false,
            item_separator,
            key_separator,
            sort_keys: false,
        }
    }
}

/// Why a value cannot be written as JSON (Python raises `TypeError`).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct NotSerializable(String);

/// Serialise a template value the way Python's `json.dumps` would.
pub(crate) fn dumps(value: &Value, options: &DumpOptions) -> Result<String, NotSerializable> {
    let mut out = String::new();
    write_value(&mut out, value, options, 0)?;
    Ok(out)
}

fn write_value(
    out: &mut String,
    value: &Value,
    options: &DumpOptions,
    depth: usize,
) -> Result<(), NotSerializable> {
    match value.kind() {
        ValueKind::None => out.push_str("null"),
        ValueKind::Bool => out.push_str(if value.is_true() { "true" } else { "false" }),
        ValueKind::Number => write_number(out, value),
        ValueKind::String => write_string(out, value.as_str().unwrap_or_default(), options),
        ValueKind::Seq | ValueKind::Iterable => {
            let items: Vec<Value> = value.try_iter().map_err(not_serializable)?.collect();
            write_container(out, '[', ']', items.len(), options, depth, |out, i| {
                write_value(out, &items[i], options, depth + 1)
            })?;
        }
        ValueKind::Map => {
            let mut entries = Vec::new();
            for key in value.try_iter().map_err(not_serializable)? {
                let item = value.get_item(&key).map_err(not_serializable)?;
                entries.push((key_string(&key)?, item));
            }
            if options.sort_keys {
                entries.sort_by(|a, b| a.0.cmp(&b.0));
            }
            write_container(out, '{', '}', entries.len(), options, depth, |out, i| {
                let (key, item) = &entries[i];
                write_string(out, key, options);
                out.push_str(&options.key_separator);
                write_value(out, item, options, depth + 1)
            })?;
        }
        ValueKind::Undefined => {
            return Err(NotSerializable(
                "Object of type Undefined is not JSON serializable".to_owned(),
            ))
        }
        other => {
            return Err(NotSerializable(format!(
                "Object of type {other} is not JSON serializable"
            )))
        }
    }
    Ok(())
}

fn not_serializable(err: minijinja::Error) -> NotSerializable {
    NotSerializable(err.to_string())
}

/// Writes `[`/`{`, the items with Python's separators and indentation, then the closer.
fn write_container(
    out: &mut String,
    open: char,
    close: char,
    len: usize,
    options: &DumpOptions,
    depth: usize,
    mut write_item: impl FnMut(&mut String, usize) -> Result<(), NotSerializable>,
) -> Result<(), NotSerializable> {
    out.push(open);
    if len == 0 {
        out.push(close);
        return Ok(());
    }
    for i in 0..len {
        if i > 0 {
            out.push_str(&options.item_separator);
        }
        if let Some(indent) = &options.indent {
            out.push('\n');
            push_indent(out, indent, depth + 1);
        }
        write_item(out, i)?;
    }
    if let Some(indent) = &options.indent {
        out.push('\n');
        push_indent(out, indent, depth);
    }
    out.push(close);
    Ok(())
}

fn push_indent(out: &mut String, indent: &str, depth: usize) {
    for _ in 0..depth {
        out.push_str(indent);
    }
}

fn write_number(out: &mut String, value: &Value) {
    if value.is_integer() {
        let _ = write!(out, "{value}");
        return;
    }
    match f64::try_from(value.clone()) {
        // json.dumps writes non-finite floats as JavaScript literals.
        Ok(f) if f.is_nan() => out.push_str("NaN"),
        Ok(f) if f.is_infinite() => out.push_str(if f > 0.0 { "Infinity" } else { "-Infinity" }),
        Ok(f) => out.push_str(&float_repr(f)),
        Err(_) => {
            let _ = write!(out, "{value}");
        }
    }
}

/// Object keys the way `json.dumps` coerces them (str, number, bool, None).
fn key_string(key: &Value) -> Result<String, NotSerializable> {
    match key.kind() {
        ValueKind::String => Ok(key.as_str().unwrap_or_default().to_owned()),
        ValueKind::Bool => Ok(if key.is_true() { "true" } else { "false" }.to_owned()),
        ValueKind::None => Ok("null".to_owned()),
        ValueKind::Number => {
            let mut s = String::new();
            write_number(&mut s, key);
            Ok(s)
        }
        other => Err(NotSerializable(format!(
            "keys must be str, int, float, bool or None, not {other}"
        ))),
    }
}

/// Python's JSON string escaping; with `ensure_ascii` also `\uXXXX` for non-ASCII.
fn write_string(out: &mut String, s: &str, options: &DumpOptions) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c if options.ensure_ascii && !c.is_ascii() => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn dump(value: serde_json::Value, options: &DumpOptions) -> String {
        dumps(&Value::from_serialize(value), options).unwrap()
    }

    #[test]
    fn one_line_uses_python_separators_and_keeps_key_order() {
        let value = json!({"z": 1, "a": [1, 2.5, null, true], "m": {}, "e": []});
        assert_eq!(
            dump(value, &DumpOptions::default()),
            r#"{"z": 1, "a": [1, 2.5, null, true], "m": {}, "e": []}"#
        );
    }

    #[test]
    fn indent_uses_bare_commas_and_newlines() {
        let value = json!({"b": [1, {"c": "d"}], "a": {}});
        let options = DumpOptions::new(Some("    ".to_owned()), None);
        assert_eq!(
            dump(value, &options),
            "{\n    \"b\": [\n        1,\n        {\n            \"c\": \"d\"\n        }\n    ],\n    \"a\": {}\n}"
        );
    }

    #[test]
    fn strings_escape_like_python_without_ensure_ascii() {
        let value = json!("Ünï \"q\" \\ <b>&'\n\t\u{1}\u{7f} 😀");
        assert_eq!(
            dump(value.clone(), &DumpOptions::default()),
            "\"Ünï \\\"q\\\" \\\\ <b>&'\\n\\t\\u0001\u{7f} 😀\""
        );
        let options = DumpOptions {
            ensure_ascii: true,
            ..DumpOptions::default()
        };
        assert_eq!(dump(json!("é😀"), &options), "\"\\u00e9\\ud83d\\ude00\"");
    }

    #[test]
    fn floats_follow_python_repr() {
        let value = json!([1.0, 1e16, 0.00001, -2.5, 12345678901234567890u64]);
        assert_eq!(
            dump(value, &DumpOptions::default()),
            "[1.0, 1e+16, 1e-05, -2.5, 12345678901234567890]"
        );
    }

    #[test]
    fn sort_keys_and_custom_separators() {
        let options = DumpOptions {
            sort_keys: true,
            ..DumpOptions::new(None, Some((",".to_owned(), ":".to_owned())))
        };
        assert_eq!(dump(json!({"b": 1, "a": 2}), &options), r#"{"a":2,"b":1}"#);
    }

    #[test]
    fn undefined_is_not_serializable() {
        let err = dumps(&Value::UNDEFINED, &DumpOptions::default()).unwrap_err();
        assert!(err.to_string().contains("not JSON serializable"), "{err}");
    }
}
