//! A minijinja environment with the semantics of Hugging Face's chat-template
//! Jinja (transformers' `_compile_jinja_template`): trim/lstrip blocks, loop
//! controls, Python-style printing, `tojson`, `raise_exception`, `strftime_now`
//! and Python string/dict methods.

use super::python_json::{dumps, DumpOptions};
use super::python_repr::py_str;
use minijinja::value::{Kwargs, Value, ValueKind};
use minijinja::{AutoEscape, Environment, Error, ErrorKind, Output, State};
use std::fmt::Write;

/// Name the single template is stored under in its environment.
pub(crate) const TEMPLATE_NAME: &str = "chat_template";

/// The message of a template's `raise_exception(...)`, carried as the error
/// source so rendering can tell it apart from other failures.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct RaisedException(pub String);

/// Builds the environment and compiles `source` into it once.
pub(crate) fn environment(source: &str) -> Result<Environment<'static>, Error> {
    let mut env = Environment::new();
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    // Prompts are not HTML: nothing is ever escaped.
    env.set_auto_escape_callback(|_| AutoEscape::None);
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.set_formatter(python_formatter);
    env.add_filter("tojson", tojson);
    env.add_filter("trim", trim);
    env.add_filter("string", |value: &Value| py_str(value));
    env.add_test("iterable", is_iterable);
    env.add_test("sequence", is_sequence);
    env.add_function("raise_exception", raise_exception);
    env.add_function("strftime_now", strftime_now);
    env.add_template_owned(TEMPLATE_NAME, source.to_owned())?;
    Ok(env)
}

/// `{{ value }}` prints what Python's `str()` would (`None`, `True`, `1e-05`).
fn python_formatter(out: &mut Output, _state: &State, value: &Value) -> Result<(), Error> {
    match value.as_str() {
        Some(s) => out.write_str(s)?,
        None => out.write_str(&py_str(value))?,
    }
    Ok(())
}

/// transformers' `tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False)`.
///
/// `sort_keys` is keyword-only here: minijinja functions take at most five arguments.
fn tojson(
    value: &Value,
    ensure_ascii: Option<Value>,
    indent: Option<Value>,
    separators: Option<Value>,
    kwargs: Kwargs,
) -> Result<Value, Error> {
    let ensure_ascii = pick(ensure_ascii, &kwargs, "ensure_ascii")?;
    let indent = pick(indent, &kwargs, "indent")?;
    let separators = pick(separators, &kwargs, "separators")?;
    let sort_keys: Option<Value> = kwargs.get("sort_keys")?;
    kwargs.assert_all_used()?;

    let indent = match indent {
        None => None,
        Some(v) if v.is_none() => None,
        Some(v) => Some(indent_text(&v)?),
    };
    let separators = match separators {
        None => None,
        Some(v) if v.is_none() => None,
        Some(v) => Some(separator_pair(&v)?),
    };
    let mut options = DumpOptions::new(indent, separators);
    options.ensure_ascii = ensure_ascii.is_some_and(|v| v.is_true());
    options.sort_keys = sort_keys.is_some_and(|v| v.is_true());
    dumps(value, &options)
        .map(Value::from)
        .map_err(|e| Error::new(ErrorKind::InvalidOperation, e.to_string()))
}

/// A `tojson` argument given either by position or by keyword, not both.
fn pick(positional: Option<Value>, kwargs: &Kwargs, name: &str) -> Result<Option<Value>, Error> {
    let keyword: Option<Value> = kwargs.get(name)?;
    match (positional, keyword) {
        (Some(_), Some(_)) => Err(Error::new(
            ErrorKind::TooManyArguments,
            format!("tojson got multiple values for argument '{name}'"),
        )),
        (p, k) => Ok(p.or(k)),
    }
}

/// Python's `indent`: a count of spaces (negative means none) or a literal string.
fn indent_text(value: &Value) -> Result<String, Error> {
    if let Some(s) = value.as_str() {
        return Ok(s.to_owned());
    }
    if value.is_integer() {
        let n = i64::try_from(value.clone())?;
        return Ok(" ".repeat(n.max(0) as usize));
    }
    Err(Error::new(
        ErrorKind::InvalidOperation,
        format!(
            "tojson indent must be an int or a string, not {}",
            value.kind()
        ),
    ))
}

/// Python's `separators=(item_separator, key_separator)`.
fn separator_pair(value: &Value) -> Result<(String, String), Error> {
    let parts: Vec<Value> = value.try_iter()?.collect();
    match parts.as_slice() {
        [item, key] if item.as_str().is_some() && key.as_str().is_some() => Ok((
            item.as_str().unwrap_or_default().to_owned(),
            key.as_str().unwrap_or_default().to_owned(),
        )),
        _ => Err(Error::new(
            ErrorKind::InvalidOperation,
            "tojson separators must be a pair of strings",
        )),
    }
}

/// Python's `str.isspace()`: Rust's whitespace plus the ASCII separators 0x1c..0x1f.
pub(crate) fn is_python_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Jinja's `trim`: `str(value).strip(chars)`, with Python's idea of whitespace.
fn trim(value: &Value, chars: Option<String>) -> Value {
    let text = py_str(value);
    let trimmed = match chars {
        Some(chars) => text.trim_matches(|c| chars.contains(c)),
        None => text.trim_matches(is_python_space),
    };
    Value::from(trimmed)
}

/// Jinja's `iterable` test: strings and containers yes, `none` and scalars no.
fn is_iterable(value: &Value) -> bool {
    match value.kind() {
        ValueKind::None | ValueKind::Bool | ValueKind::Number | ValueKind::Invalid => false,
        // Jinja's Undefined iterates as empty.
        ValueKind::Undefined => true,
        _ => value.try_iter().is_ok(),
    }
}

/// Jinja's `sequence` test: anything with a length and indexing (str, list, dict).
fn is_sequence(value: &Value) -> bool {
    matches!(
        value.kind(),
        ValueKind::String | ValueKind::Seq | ValueKind::Map | ValueKind::Undefined
    )
}

/// `raise_exception(message)`: fails the render with exactly that message.
fn raise_exception(message: &Value) -> Result<Value, Error> {
    let message = py_str(message);
    Err(Error::new(ErrorKind::InvalidOperation, message.clone())
        .with_source(RaisedException(message)))
}

/// `strftime_now(format)`: Python's `datetime.now().strftime(format)`, local time.
fn strftime_now(format: &str) -> Result<Value, Error> {
    let mut out = String::new();
    write!(out, "{}", chrono::Local::now().format(format)).map_err(|_| {
        Error::new(
            ErrorKind::InvalidOperation,
            format!("strftime_now: invalid format string {format:?}"),
        )
    })?;
    Ok(Value::from(out))
}
