//! Llama 3.1's syntaxes: JSON calls (`{"name": .., "parameters": {..}}`) for
//! custom tools, and `<|python_tag|>name.call(k=v, ..)` for built-in ones.

use serde_json::{Map, Number, Value};

use super::super::call::{call_from_object, ParseError, Parsed, ToolCall};
use super::snippet;

const PYTHON_TAG: &str = "<|python_tag|>";
/// End-of-message and end-of-turn tokens, when the engine leaves them in.
const END_TOKENS: [&str; 2] = ["<|eom_id|>", "<|eot_id|>"];

/// Parses one output. Only output that starts like a call (`{` or the
/// python tag) is read as calls; anything else is an answer in words.
pub(super) fn parse(text: &str) -> Result<Parsed, ParseError> {
    let trimmed = text.trim();
    let (tagged, body) = match trimmed.strip_prefix(PYTHON_TAG) {
        Some(rest) => (true, rest),
        None => (false, trimmed),
    };
    if !tagged && !body.starts_with('{') {
        return Ok(Parsed::Text(text.to_owned()));
    }
    let body = strip_end_tokens(body);
    let calls = if body.is_empty() {
        Err(format!("nothing follows `{PYTHON_TAG}`"))
    } else if body.starts_with('{') {
        json_calls(body)
    } else {
        builtin_calls(body)
    };
    calls
        .map(Parsed::Calls)
        .map_err(|reason| ParseError::new(text, reason))
}

fn strip_end_tokens(mut body: &str) -> &str {
    body = body.trim();
    while let Some(rest) = END_TOKENS.iter().find_map(|t| body.strip_suffix(t)) {
        body = rest.trim_end();
    }
    body.trim()
}

/// Skips the separator after a call and says whether it was one (`;` or a
/// new line): two calls run together are not accepted.
fn separator(rest: &str) -> (&str, bool) {
    let after = rest.trim_start_matches(|c: char| c.is_whitespace() || c == ';');
    let sep = &rest[..rest.len() - after.len()];
    (after, sep.contains(';') || sep.contains('\n'))
}

/// One or more JSON call objects.
fn json_calls(body: &str) -> Result<Vec<ToolCall>, String> {
    let mut calls = Vec::new();
    let mut rest = body;
    loop {
        let mut stream = serde_json::Deserializer::from_str(rest).into_iter::<Value>();
        let value = match stream.next() {
            Some(Ok(v)) => v,
            Some(Err(e)) => return Err(format!("invalid JSON in a call: {e}")),
            None => return Err("expected a call".into()),
        };
        calls.push(call_from_object(&value)?);
        let (after, separated) = separator(&rest[stream.byte_offset()..]);
        if after.is_empty() {
            return Ok(calls);
        }
        if !after.starts_with('{') {
            return Err(format!(
                "unexpected text after a call: `{}`",
                snippet(after)
            ));
        }
        if !separated {
            return Err("calls must be separated by `;` or a new line".into());
        }
        rest = after;
    }
}

/// One or more `name.call(k=v, ..)` calls.
fn builtin_calls(body: &str) -> Result<Vec<ToolCall>, String> {
    let mut calls = Vec::new();
    let mut c = Cursor { s: body, pos: 0 };
    loop {
        let name = c
            .ident()
            .ok_or_else(|| format!("expected `name.call(..)`, got `{}`", snippet(c.rest())))?;
        if !c.eat(".call(") {
            return Err(format!("expected `{name}.call(..)`"));
        }
        let arguments = c.arguments()?;
        calls.push(ToolCall::new(name, Value::Object(arguments)));
        let (after, separated) = separator(c.rest());
        if after.is_empty() {
            return Ok(calls);
        }
        if !separated {
            return Err(format!(
                "unexpected text after a call: `{}`",
                snippet(after)
            ));
        }
        c.pos = c.s.len() - after.len();
    }
}

/// A position in the text of built-in calls.
struct Cursor<'a> {
    s: &'a str,
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn rest(&self) -> &'a str {
        &self.s[self.pos..]
    }

    fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }

    fn bump(&mut self) -> Option<char> {
        let ch = self.peek()?;
        self.pos += ch.len_utf8();
        Some(ch)
    }

    fn eat(&mut self, token: &str) -> bool {
        if self.rest().starts_with(token) {
            self.pos += token.len();
            true
        } else {
            false
        }
    }

    fn skip_ws(&mut self) {
        let rest = self.rest();
        self.pos += rest.len() - rest.trim_start().len();
    }

    /// `[A-Za-z_][A-Za-z0-9_]*`.
    fn ident(&mut self) -> Option<String> {
        let rest = self.rest();
        let first = rest.chars().next()?;
        if !(first.is_ascii_alphabetic() || first == '_') {
            return None;
        }
        let len = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        self.pos += len;
        Some(rest[..len].to_owned())
    }

    /// `k=v, ..)` up to and including the closing parenthesis.
    fn arguments(&mut self) -> Result<Map<String, Value>, String> {
        let mut args = Map::new();
        self.skip_ws();
        if self.eat(")") {
            return Ok(args);
        }
        loop {
            self.skip_ws();
            let key = self.ident().ok_or_else(|| {
                format!(
                    "expected a keyword argument `name=value`, got `{}`",
                    snippet(self.rest())
                )
            })?;
            self.skip_ws();
            if !self.eat("=") {
                return Err(format!("expected `=` after `{key}`"));
            }
            self.skip_ws();
            let value = self.literal()?;
            if args.insert(key.clone(), value).is_some() {
                return Err(format!("argument `{key}` is given twice"));
            }
            self.skip_ws();
            if self.eat(")") {
                return Ok(args);
            }
            if !self.eat(",") {
                return Err(format!("expected `,` or `)` after argument `{key}`"));
            }
            self.skip_ws();
            if self.eat(")") {
                return Ok(args);
            }
        }
    }

    /// A string, number, boolean or none literal.
    fn literal(&mut self) -> Result<Value, String> {
        match self.peek() {
            Some(q @ ('"' | '\'')) => {
                self.bump();
                self.string(q).map(Value::String)
            }
            Some(c) if c.is_ascii_digit() || c == '-' || c == '+' => self.number(),
            Some(_) => match self.ident().as_deref() {
                Some("True" | "true") => Ok(Value::Bool(true)),
                Some("False" | "false") => Ok(Value::Bool(false)),
                Some("None" | "null") => Ok(Value::Null),
                _ => Err(format!(
                    "expected a string, number or boolean, got `{}`",
                    snippet(self.rest())
                )),
            },
            None => Err("the call is cut off".into()),
        }
    }

    /// The rest of a string opened by `quote`, with Python's common escapes.
    fn string(&mut self, quote: char) -> Result<String, String> {
        let mut out = String::new();
        loop {
            match self.bump() {
                None => return Err("a string is never closed".into()),
                Some(c) if c == quote => return Ok(out),
                Some('\\') => match self.bump() {
                    Some('\\') => out.push('\\'),
                    Some('"') => out.push('"'),
                    Some('\'') => out.push('\''),
                    Some('n') => out.push('\n'),
                    Some('t') => out.push('\t'),
                    Some('r') => out.push('\r'),
                    Some('u') => out.push(self.unicode_escape()?),
                    Some(other) => return Err(format!("unknown escape `\\{other}` in a string")),
                    None => return Err("a string is never closed".into()),
                },
                Some(c) => out.push(c),
            }
        }
    }

    /// `XXXX` after `\u`, with a second `\uXXXX` for a surrogate pair.
    fn unicode_escape(&mut self) -> Result<char, String> {
        let high = self.hex4()?;
        if !(0xD800..0xDC00).contains(&high) {
            return char::from_u32(high).ok_or_else(|| format!("invalid escape `\\u{high:04x}`"));
        }
        if !self.eat("\\u") {
            return Err(format!("unpaired surrogate `\\u{high:04x}`"));
        }
        let low = self.hex4()?;
        if !(0xDC00..0xE000).contains(&low) {
            return Err(format!("unpaired surrogate `\\u{high:04x}`"));
        }
        let code = 0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00);
        char::from_u32(code).ok_or_else(|| "invalid surrogate pair".to_owned())
    }

    fn hex4(&mut self) -> Result<u32, String> {
        let digits = self.rest().get(..4).unwrap_or("");
        if digits.len() != 4 || !digits.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err("`\\u` must be followed by four hex digits".into());
        }
        self.pos += 4;
        u32::from_str_radix(digits, 16).map_err(|e| e.to_string())
    }

    /// `[+-]digits[.digits][(e|E)[+-]digits]`: an integer when it has no
    /// fraction or exponent, else a float.
    fn number(&mut self) -> Result<Value, String> {
        let start = self.pos;
        let digits = |c: &mut Self| {
            let rest = c.rest();
            let len = rest
                .find(|ch: char| !ch.is_ascii_digit())
                .unwrap_or(rest.len());
            c.pos += len;
            len
        };
        if !self.eat("-") {
            self.eat("+");
        }
        let mut float = false;
        let mut ok = digits(self) > 0;
        if self.eat(".") {
            float = true;
            ok &= digits(self) > 0;
        }
        if self.eat("e") || self.eat("E") {
            float = true;
            if !self.eat("-") {
                self.eat("+");
            }
            ok &= digits(self) > 0;
        }
        let text = &self.s[start..self.pos];
        let bad = || format!("invalid number `{text}`");
        if !ok {
            return Err(bad());
        }
        let text = text.strip_prefix('+').unwrap_or(text);
        if !float {
            if let Ok(n) = text.parse::<i64>() {
                return Ok(Value::Number(n.into()));
            }
        }
        text.parse::<f64>()
            .ok()
            .and_then(Number::from_f64)
            .map(Value::Number)
            .ok_or_else(bad)
    }
}
