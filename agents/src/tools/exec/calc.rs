//! The calculator's arithmetic.
//!
//! Hand-written on purpose: general expression crates also evaluate
//! variables, assignments and function calls, which a model-controlled
//! input should not reach. This one knows numbers, `+ - * / % ^`,
//! parentheses and unary signs, and nothing else.

/// Longest expression accepted (also bounds the nesting depth).
pub(crate) const MAX_LEN: usize = 256;
/// Deepest nesting of parentheses and unary signs.
const MAX_DEPTH: usize = 64;

/// Evaluates `expression`; division by zero, overflow and anything not
/// arithmetic are errors.
pub(crate) fn evaluate(expression: &str) -> Result<f64, String> {
    if expression.len() > MAX_LEN {
        return Err(format!(
            "the expression is longer than {MAX_LEN} characters"
        ));
    }
    let mut p = Parser {
        s: expression.as_bytes(),
        pos: 0,
        depth: 0,
    };
    let value = p.sum()?;
    p.skip_ws();
    if p.pos < p.s.len() {
        return Err(format!(
            "unexpected `{}` at position {}",
            p.s[p.pos] as char,
            p.pos + 1
        ));
    }
    finite(value)
}

fn finite(value: f64) -> Result<f64, String> {
    if value.is_finite() {
        Ok(value)
    } else {
        Err("the result is too large".into())
    }
}

/// Recursive descent over the grammar
/// `sum = product (("+"|"-") product)*`,
/// `product = unary (("*"|"/"|"%") unary)*`,
/// `unary = ("-"|"+") unary | power`,
/// `power = atom ("^" unary)?` (right-associative; `-2^2` is `-(2^2)`),
/// `atom = number | "(" sum ")"`.
struct Parser<'a> {
    s: &'a [u8],
    pos: usize,
    depth: usize,
}

impl Parser<'_> {
    fn skip_ws(&mut self) {
        while self.s.get(self.pos).is_some_and(u8::is_ascii_whitespace) {
            self.pos += 1;
        }
    }

    fn next_op(&mut self, ops: &[u8]) -> Option<u8> {
        self.skip_ws();
        let c = *self.s.get(self.pos)?;
        if ops.contains(&c) {
            self.pos += 1;
            Some(c)
        } else {
            None
        }
    }

    fn sum(&mut self) -> Result<f64, String> {
        let mut value = self.product()?;
        while let Some(op) = self.next_op(b"+-") {
            let rhs = self.product()?;
            value = finite(if op == b'+' { value + rhs } else { value - rhs })?;
        }
        Ok(value)
    }

    fn product(&mut self) -> Result<f64, String> {
        let mut value = self.unary()?;
        while let Some(op) = self.next_op(b"*/%") {
            let rhs = self.unary()?;
            if op != b'*' && rhs == 0.0 {
                return Err("division by zero".into());
            }
            value = finite(match op {
                b'*' => value * rhs,
                b'/' => value / rhs,
                _ => value % rhs,
            })?;
        }
        Ok(value)
    }

    fn unary(&mut self) -> Result<f64, String> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err("the expression is nested too deeply".into());
        }
        let value = match self.next_op(b"-+") {
            Some(b'-') => self.unary().map(|v| -v),
            Some(_) => self.unary(),
            None => self.power(),
        };
        self.depth -= 1;
        value
    }

    fn power(&mut self) -> Result<f64, String> {
        let base = self.atom()?;
        if self.next_op(b"^").is_none() {
            return Ok(base);
        }
        let exponent = self.unary()?;
        let value = base.powf(exponent);
        if value.is_nan() {
            return Err("the power is not a real number".into());
        }
        if base == 0.0 && exponent < 0.0 {
            return Err("division by zero".into());
        }
        finite(value)
    }

    fn atom(&mut self) -> Result<f64, String> {
        self.skip_ws();
        match self.s.get(self.pos) {
            Some(b'(') => {
                self.pos += 1;
                self.depth += 1;
                if self.depth > MAX_DEPTH {
                    return Err("the expression is nested too deeply".into());
                }
                let value = self.sum()?;
                self.depth -= 1;
                if self.next_op(b")").is_none() {
                    return Err("a parenthesis is never closed".into());
                }
                Ok(value)
            }
            Some(c) if c.is_ascii_digit() || *c == b'.' => self.number(),
            Some(c) => Err(format!(
                "unexpected `{}` at position {}",
                *c as char,
                self.pos + 1
            )),
            None => Err("the expression ends too early".into()),
        }
    }

    /// `digits[.digits]` or `.digits`.
    fn number(&mut self) -> Result<f64, String> {
        let start = self.pos;
        let mut digits = 0;
        let mut dot = false;
        while let Some(&c) = self.s.get(self.pos) {
            if c.is_ascii_digit() {
                digits += 1;
            } else if c == b'.' && !dot {
                dot = true;
            } else {
                break;
            }
            self.pos += 1;
        }
        // The slice is ASCII digits and at most one dot.
        let text = std::str::from_utf8(&self.s[start..self.pos]).unwrap_or_default();
        if digits == 0 {
            return Err(format!("invalid number `{text}`"));
        }
        text.parse::<f64>()
            .map_err(|_| format!("invalid number `{text}`"))
            .and_then(finite)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The evaluator's own refusals, below the schema that normally keeps
    /// such text from reaching it (defence in depth).
    #[test]
    fn malformed_text_is_refused() {
        let too_long = format!("1{}", " + 1".repeat(100));
        for (expression, needle) in [
            ("1e999", "unexpected `e`"),
            ("2 +", "ends too early"),
            ("", "ends too early"),
            ("(1 + 2", "never closed"),
            ("1 + 2)", "unexpected `)`"),
            ("abc", "unexpected `a`"),
            ("x = 3", "unexpected `x`"),
            ("sqrt(4)", "unexpected `s`"),
            ("1..2", "unexpected `.`"),
            (too_long.as_str(), "longer than 256"),
        ] {
            let message = evaluate(expression).unwrap_err();
            assert!(message.contains(needle), "{expression}: {message}");
        }
    }
}
