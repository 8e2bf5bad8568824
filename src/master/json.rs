//! JSON for the control socket: a value type, a parser (`json.loads` as the reference) and a
//! writer that prints byte for byte what Python's `json.dumps(obj)` prints with its default
//! arguments, so the real `gunicornc` client sees the same answers as from Gunicorn.
//!
//! Where we differ from Python (none of it matters to the control protocol):
//! - a lone UTF-16 surrogate in a `\uXXXX` escape becomes U+FFFD (a Rust `String` cannot hold
//!   it; Python keeps it, and would print it back as the same escape);
//! - an integer literal outside `i64` becomes a `Float` (Python keeps big ints exact), and so
//!   does a `u64`/`usize` above `i64::MAX` given to `From`;
//! - duplicate object keys are all kept in order and [`Json::get`] returns the first (Python's
//!   dict keeps the last);
//! - nesting deeper than [`MAX_DEPTH`] is an error (Python's limit is its recursion limit);
//! - only UTF-8 input is accepted (Python's `json.loads` of bytes also detects UTF-16/32); a
//!   leading UTF-8 BOM is skipped, as Python does for bytes.

/// Arrays and objects nested deeper than this are refused, so a hostile frame cannot
/// overflow the stack.
pub const MAX_DEPTH: usize = 128;

/// A JSON value. Objects keep their keys in the order given (Python dicts do).
#[derive(Debug, Clone, PartialEq)]
pub enum Json {
    Null,
    Bool(bool),
    /// An integer that fits i64.
    Int(i64),
    /// Any other number (fraction, exponent, or an integer outside i64).
    Float(f64),
    Str(String),
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
}

impl Json {
    /// Parses one JSON text (RFC 8259: surrounding whitespace allowed, nothing after it), plus
    /// Python's `NaN`, `Infinity` and `-Infinity` literals. Errors (a short message with the
    /// byte offset) on anything else: invalid UTF-8, trailing bytes, bad escapes, raw control
    /// characters in strings, nesting deeper than [`MAX_DEPTH`].
    pub fn parse(bytes: &[u8]) -> Result<Json, String> {
        let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
        let text = std::str::from_utf8(bytes)
            .map_err(|e| format!("invalid UTF-8 at byte {}", e.valid_up_to()))?;
        let mut parser = Parser {
            text,
            bytes,
            pos: 0,
        };
        parser.skip_ws();
        let value = parser.value(0)?;
        parser.skip_ws();
        if parser.pos != bytes.len() {
            return Err(parser.error("extra data"));
        }
        Ok(value)
    }

    /// As Python's `json.dumps(self)` with default arguments.
    pub fn to_python_json(&self) -> String {
        let mut out = String::new();
        self.write(&mut out);
        out
    }

    /// Looks a key up in an object (first match); None for non-objects.
    pub fn get(&self, key: &str) -> Option<&Json> {
        match self {
            Json::Object(pairs) => pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    fn write(&self, out: &mut String) {
        match self {
            Json::Null => out.push_str("null"),
            Json::Bool(true) => out.push_str("true"),
            Json::Bool(false) => out.push_str("false"),
            Json::Int(i) => out.push_str(&i.to_string()),
            Json::Float(f) => write_float(out, *f),
            Json::Str(s) => write_str(out, s),
            Json::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    item.write(out);
                }
                out.push(']');
            }
            Json::Object(pairs) => {
                out.push('{');
                for (i, (key, value)) in pairs.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    write_str(out, key);
                    out.push_str(": ");
                    value.write(out);
                }
                out.push('}');
            }
        }
    }
}

/// Builds an object from (key, value) pairs in order: `object([("a", Json::Int(1))])`.
pub fn object<const N: usize>(pairs: [(&str, Json); N]) -> Json {
    Json::Object(pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
}

impl From<&str> for Json {
    fn from(s: &str) -> Json {
        Json::Str(s.to_owned())
    }
}

impl From<String> for Json {
    fn from(s: String) -> Json {
        Json::Str(s)
    }
}

impl From<bool> for Json {
    fn from(b: bool) -> Json {
        Json::Bool(b)
    }
}

impl From<i64> for Json {
    fn from(i: i64) -> Json {
        Json::Int(i)
    }
}

impl From<i32> for Json {
    fn from(i: i32) -> Json {
        Json::Int(i64::from(i))
    }
}

/// `Int`, or `Float` above `i64::MAX` (Python would print the exact integer).
impl From<u64> for Json {
    fn from(u: u64) -> Json {
        match i64::try_from(u) {
            Ok(i) => Json::Int(i),
            Err(_) => Json::Float(u as f64),
        }
    }
}

/// As `From<u64>`.
impl From<usize> for Json {
    fn from(u: usize) -> Json {
        match u64::try_from(u) {
            Ok(u) => Json::from(u),
            Err(_) => Json::Float(u as f64),
        }
    }
}

impl From<f64> for Json {
    fn from(f: f64) -> Json {
        Json::Float(f)
    }
}

impl<T: Into<Json>> From<Option<T>> for Json {
    fn from(o: Option<T>) -> Json {
        o.map_or(Json::Null, Into::into)
    }
}

impl From<Vec<Json>> for Json {
    fn from(items: Vec<Json>) -> Json {
        Json::Array(items)
    }
}

/// Writes a string as Python's `json.dumps` does with `ensure_ascii=True`: printable ASCII
/// (space to `~`) as is except `"` and `\`, the five short escapes, everything else (other
/// control characters, DEL and all non-ASCII) as `\uXXXX` in lowercase hex, characters above
/// U+FFFF as a surrogate pair.
fn write_str(out: &mut String, s: &str) {
    out.reserve(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            ' '..='~' => out.push(c),
            _ => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    out.push_str("\\u");
                    for shift in [12, 8, 4, 0] {
                        let nibble = u32::from((*unit >> shift) & 0xf);
                        out.push(char::from_digit(nibble, 16).unwrap_or('0'));
                    }
                }
            }
        }
    }
    out.push('"');
}

/// Writes a float as Python's `repr(float)` (and `json.dumps`): the shortest digits that
/// round-trip, in positional notation when the decimal exponent is in -4..16 (with `.0` when
/// integral), else as `d[.ddd]e±XX`.
fn write_float(out: &mut String, f: f64) {
    if f.is_nan() {
        out.push_str("NaN");
        return;
    }
    if f.is_infinite() {
        out.push_str(if f > 0.0 { "Infinity" } else { "-Infinity" });
        return;
    }
    // Rust's `{:e}` gives the shortest round-trip digits: "-1.5e16", "1e-5", "0e0". When two
    // strings that short round-trip, it may pick the upper one where Python picks the nearer
    // (87829832555702.125: Rust ...13, Python ...12); Rust's fixed-precision formatting rounds
    // the exact value half to even, as Python does, so prefer that whenever it round-trips.
    let mut sci = format!("{f:e}");
    let precision = sci.split_once('e').map_or(0, |(m, _)| {
        m.bytes()
            .filter(u8::is_ascii_digit)
            .count()
            .saturating_sub(1)
    });
    if precision > 0 {
        let nearest = format!("{f:.precision$e}");
        if nearest.parse::<f64>() == Ok(f) {
            sci = nearest;
        }
    }
    let Some((mantissa, exp)) = sci.split_once('e') else {
        out.push_str(&sci);
        return;
    };
    let Ok(exp) = exp.parse::<i32>() else {
        out.push_str(&sci);
        return;
    };
    let mantissa = match mantissa.strip_prefix('-') {
        Some(rest) => {
            out.push('-');
            rest
        }
        None => mantissa,
    };
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let (first, rest) = digits.split_at(1.min(digits.len()));
    if !(-4..16).contains(&exp) {
        out.push_str(first);
        if !rest.is_empty() {
            out.push('.');
            out.push_str(rest);
        }
        out.push_str(if exp < 0 { "e-" } else { "e+" });
        let abs = exp.unsigned_abs();
        if abs < 10 {
            out.push('0');
        }
        out.push_str(&abs.to_string());
        return;
    }
    // The decimal point goes after `point` digits (here -3..=16).
    let point = exp + 1;
    let n = digits.len();
    match usize::try_from(point) {
        Err(_) | Ok(0) => {
            out.push_str("0.");
            for _ in 0..point.unsigned_abs() {
                out.push('0');
            }
            out.push_str(&digits);
        }
        Ok(p) if p >= n => {
            out.push_str(&digits);
            for _ in n..p {
                out.push('0');
            }
            out.push_str(".0");
        }
        Ok(p) => {
            let (int, frac) = digits.split_at(p);
            out.push_str(int);
            out.push('.');
            out.push_str(frac);
        }
    }
}

/// A recursive-descent parser over input already checked to be UTF-8; recursion is bounded
/// by [`MAX_DEPTH`] and every byte is looked at a bounded number of times.
struct Parser<'a> {
    text: &'a str,
    bytes: &'a [u8],
    pos: usize,
}

impl Parser<'_> {
    fn error(&self, what: &str) -> String {
        format!("{what} at byte {}", self.pos)
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.pos += 1;
        }
    }

    fn eat(&mut self, literal: &str) -> bool {
        let found = self.bytes[self.pos..].starts_with(literal.as_bytes());
        if found {
            self.pos += literal.len();
        }
        found
    }

    /// One value at the current position (whitespace already skipped); `depth` is the
    /// number of arrays and objects around it.
    fn value(&mut self, depth: usize) -> Result<Json, String> {
        match self.peek() {
            Some(b'[' | b'{') if depth >= MAX_DEPTH => Err(self.error("nesting too deep")),
            Some(b'[') => self.array(depth + 1),
            Some(b'{') => self.object(depth + 1),
            Some(b'"') => self.string().map(Json::Str),
            Some(b'n') if self.eat("null") => Ok(Json::Null),
            Some(b't') if self.eat("true") => Ok(Json::Bool(true)),
            Some(b'f') if self.eat("false") => Ok(Json::Bool(false)),
            Some(b'N') if self.eat("NaN") => Ok(Json::Float(f64::NAN)),
            Some(b'I') if self.eat("Infinity") => Ok(Json::Float(f64::INFINITY)),
            Some(b'-') if self.eat("-Infinity") => Ok(Json::Float(f64::NEG_INFINITY)),
            Some(b'-' | b'0'..=b'9') => self.number(),
            _ => Err(self.error("expecting value")),
        }
    }

    fn array(&mut self, depth: usize) -> Result<Json, String> {
        self.pos += 1; // '['
        let mut items = Vec::new();
        self.skip_ws();
        if self.eat("]") {
            return Ok(Json::Array(items));
        }
        loop {
            items.push(self.value(depth)?);
            self.skip_ws();
            if self.eat("]") {
                return Ok(Json::Array(items));
            }
            if !self.eat(",") {
                return Err(self.error("expecting ',' or ']'"));
            }
            self.skip_ws();
        }
    }

    fn object(&mut self, depth: usize) -> Result<Json, String> {
        self.pos += 1; // '{'
        let mut pairs = Vec::new();
        self.skip_ws();
        if self.eat("}") {
            return Ok(Json::Object(pairs));
        }
        loop {
            if self.peek() != Some(b'"') {
                return Err(self.error("expecting property name in double quotes"));
            }
            let key = self.string()?;
            self.skip_ws();
            if !self.eat(":") {
                return Err(self.error("expecting ':'"));
            }
            self.skip_ws();
            pairs.push((key, self.value(depth)?));
            self.skip_ws();
            if self.eat("}") {
                return Ok(Json::Object(pairs));
            }
            if !self.eat(",") {
                return Err(self.error("expecting ',' or '}'"));
            }
            self.skip_ws();
        }
    }

    fn digits(&mut self) -> usize {
        let start = self.pos;
        while let Some(b'0'..=b'9') = self.peek() {
            self.pos += 1;
        }
        self.pos - start
    }

    /// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?`, as Python's scanner: a `.` or an
    /// exponent marker not followed by digits is left for the caller (so `1.` is extra data).
    fn number(&mut self) -> Result<Json, String> {
        let start = self.pos;
        self.eat("-");
        match self.peek() {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => {
                self.pos = start;
                return Err(self.error("expecting value"));
            }
        }
        let mut integral = true;
        if self.peek() == Some(b'.') && matches!(self.bytes.get(self.pos + 1), Some(b'0'..=b'9')) {
            self.pos += 1;
            self.digits();
            integral = false;
        }
        if let Some(b'e' | b'E') = self.peek() {
            let mark = self.pos;
            self.pos += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.pos += 1;
            }
            if self.digits() == 0 {
                self.pos = mark;
            } else {
                integral = false;
            }
        }
        let literal = self.text.get(start..self.pos).unwrap_or_default();
        if integral {
            if let Ok(i) = literal.parse::<i64>() {
                return Ok(Json::Int(i));
            }
        }
        literal
            .parse::<f64>()
            .map(Json::Float)
            .map_err(|_| format!("bad number at byte {start}"))
    }

    /// Four hex digits at `at` (for a `\u` escape).
    fn hex4(&self, at: usize) -> Result<u32, String> {
        let hex = self.text.get(at..at + 4).unwrap_or_default();
        if hex.len() != 4 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("invalid \\uXXXX escape at byte {at}"));
        }
        u32::from_str_radix(hex, 16).map_err(|_| format!("invalid \\uXXXX escape at byte {at}"))
    }

    /// A string; the current byte is its opening quote.
    fn string(&mut self) -> Result<String, String> {
        let open = self.pos;
        self.pos += 1;
        let mut out = String::new();
        loop {
            let start = self.pos;
            while let Some(b) = self.peek() {
                if b == b'"' || b == b'\\' || b < 0x20 {
                    break;
                }
                self.pos += 1;
            }
            // Stops only at ASCII bytes, so both ends are character boundaries.
            out.push_str(self.text.get(start..self.pos).unwrap_or_default());
            match self.peek() {
                None => return Err(format!("unterminated string starting at byte {open}")),
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(out);
                }
                Some(b'\\') => self.escape(&mut out)?,
                Some(_) => return Err(self.error("invalid control character")),
            }
        }
    }

    /// One escape; the current byte is its backslash.
    fn escape(&mut self, out: &mut String) -> Result<(), String> {
        let short = match self.bytes.get(self.pos + 1) {
            Some(b'"') => '"',
            Some(b'\\') => '\\',
            Some(b'/') => '/',
            Some(b'b') => '\u{8}',
            Some(b'f') => '\u{c}',
            Some(b'n') => '\n',
            Some(b'r') => '\r',
            Some(b't') => '\t',
            Some(b'u') => {
                let unit = self.hex4(self.pos + 2)?;
                self.pos += 6;
                let c = match unit {
                    0xD800..=0xDBFF if self.bytes[self.pos..].starts_with(b"\\u") => {
                        let low = self.hex4(self.pos + 2)?;
                        if (0xDC00..=0xDFFF).contains(&low) {
                            self.pos += 6;
                            char::from_u32(0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00))
                        } else {
                            None // the next escape is read on its own
                        }
                    }
                    _ => char::from_u32(unit),
                };
                out.push(c.unwrap_or(char::REPLACEMENT_CHARACTER));
                return Ok(());
            }
            _ => return Err(self.error("invalid \\escape")),
        };
        out.push(short);
        self.pos += 2;
        Ok(())
    }
}

// The explicit path makes the file resolve the same whether this file is compiled as a
// module of the crate or on its own (`rustc --test src/master/json.rs`).
#[cfg(test)]
#[path = "json/tests.rs"]
mod tests;
