//! The row type of the settings table and the typed values a row produces.
//!
//! A [`Setting`] describes one Gunicorn setting once: its name, flags, how a string from the
//! command line or `GUNICORN_CMD_ARGS` becomes a [`Value`], and its default (which may read
//! the environment, as Gunicorn's do). The table itself lives in `defs.rs`.

use std::fmt;

/// How a setting's flag behaves on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Takes one value; the last one given wins.
    Set,
    /// Takes one value per occurrence; occurrences accumulate into a list.
    Append,
    /// A switch without a value that sets the setting to `True`.
    SetTrue,
    /// A switch without a value that sets the setting to `False` (`--no-sendfile`).
    SetFalse,
}

/// A setting's value, as Python would see it (so `--print-config` can show it the Gunicorn way).
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    None,
    Bool(bool),
    Int(i64),
    Str(String),
    List(Vec<String>),
    /// A string-to-string dict (`secure_scheme_headers`), in insertion order.
    Dict(Vec<(String, String)>),
    /// A `(host, port)` tuple (`statsd_host`, parsed as Gunicorn keeps it).
    Address(String, i64),
}

impl fmt::Display for Value {
    /// Python's `repr`, which is what Gunicorn's `--print-config` prints.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn quoted(f: &mut fmt::Formatter<'_>, s: &str) -> fmt::Result {
            let quote = if s.contains('\'') && !s.contains('"') {
                '"'
            } else {
                '\''
            };
            write!(f, "{quote}")?;
            for c in s.chars() {
                match c {
                    '\\' => write!(f, "\\\\")?,
                    '\n' => write!(f, "\\n")?,
                    '\r' => write!(f, "\\r")?,
                    '\t' => write!(f, "\\t")?,
                    c if c == quote => write!(f, "\\{c}")?,
                    c => write!(f, "{c}")?,
                }
            }
            write!(f, "{quote}")
        }
        match self {
            Value::None => write!(f, "None"),
            Value::Bool(true) => write!(f, "True"),
            Value::Bool(false) => write!(f, "False"),
            Value::Int(n) => write!(f, "{n}"),
            Value::Str(s) => quoted(f, s),
            Value::List(items) => {
                write!(f, "[")?;
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        write!(f, ", ")?;
                    }
                    quoted(f, item)?;
                }
                write!(f, "]")
            }
            Value::Address(host, port) => {
                write!(f, "(")?;
                quoted(f, host)?;
                write!(f, ", {port})")
            }
            Value::Dict(pairs) => {
                write!(f, "{{")?;
                for (i, (k, v)) in pairs.iter().enumerate() {
                    if i > 0 {
                        write!(f, ", ")?;
                    }
                    quoted(f, k)?;
                    write!(f, ": ")?;
                    quoted(f, v)?;
                }
                write!(f, "}}")
            }
        }
    }
}

/// Whether rgunicorn implements a setting Gunicorn has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Support {
    /// Implemented.
    Full,
    /// Recognised, not implemented, harmless to ignore: setting it logs a warning that
    /// names the setting and says why.
    Ignored(&'static str),
    /// Recognised but refused: ignoring it would silently change behaviour, so setting it
    /// to anything but its default is a configuration error with this reason.
    Refused(&'static str),
}

impl Value {
    /// Python's `str()` of the value (strings unquoted, lists as their repr), which is what
    /// Gunicorn's `--print-config` shows.
    pub fn to_python_str(&self) -> String {
        match self {
            Value::Str(s) => s.clone(),
            other => other.to_string(),
        }
    }
}

/// Turns one command-line string into a value, or says why it cannot (Gunicorn's wording).
pub type Parser = fn(&str) -> Result<Value, String>;

/// One row of the settings table.
pub struct Setting {
    /// Gunicorn's setting name, as used in `gunicorn.conf.py` (`graceful_timeout`).
    pub name: &'static str,
    /// Gunicorn's documentation section (`Server Socket`, `Worker Processes`, ...).
    pub section: &'static str,
    /// Command-line flags, short first (`-w`, `--workers`); empty for file-only settings.
    pub flags: &'static [&'static str],
    /// The value's placeholder in `--help` (`INT`, `ADDRESS`).
    pub meta: &'static str,
    pub action: Action,
    /// Parses a value given as text (command line, `GUNICORN_CMD_ARGS`).
    pub parse: Parser,
    /// The default, computed when the settings are resolved (may read the environment).
    pub default: fn() -> Value,
    /// First line of Gunicorn's description: the `--help` text.
    pub help: &'static str,
    /// Whether rgunicorn implements it.
    pub support: Support,
}

/// Parses a non-negative integer the way Gunicorn's `validate_pos_int` does (`int(x, 0)`).
pub fn parse_pos_int(text: &str) -> Result<Value, String> {
    let t = text.trim();
    let (digits, radix) = match t.get(..2).map(|p| p.to_ascii_lowercase()) {
        Some(p) if p == "0x" => (&t[2..], 16),
        Some(p) if p == "0o" => (&t[2..], 8),
        Some(p) if p == "0b" => (&t[2..], 2),
        _ => (t.strip_prefix('+').unwrap_or(t), 10),
    };
    let digits: String = digits.chars().filter(|&c| c != '_').collect();
    match i64::from_str_radix(&digits, radix) {
        Ok(n) if n >= 0 => Ok(Value::Int(n)),
        Ok(n) => Err(format!("Value must be positive: {n}")),
        Err(_) if t.starts_with('-') && t[1..].chars().all(|c| c.is_ascii_digit()) => {
            Err(format!("Value must be positive: {t}"))
        }
        Err(_) => Err(format!("invalid literal for int() with base 0: '{text}'")),
    }
}

/// Any integer, negatives allowed (limits whose negative values have a meaning).
pub fn parse_int(text: &str) -> Result<Value, String> {
    match text.trim().strip_prefix('-') {
        Some(rest) => match parse_pos_int(rest)? {
            Value::Int(n) => Ok(Value::Int(-n)),
            other => Ok(other),
        },
        None => parse_pos_int(text),
    }
}

/// A free-form string.
pub fn parse_string(text: &str) -> Result<Value, String> {
    Ok(Value::Str(text.to_string()))
}

/// A boolean switch given as text (`true`/`false`, as Gunicorn's `validate_bool` accepts).
pub fn parse_bool(text: &str) -> Result<Value, String> {
    match text.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "y" | "on" => Ok(Value::Bool(true)),
        "false" | "0" | "no" | "n" | "off" => Ok(Value::Bool(false)),
        _ => Err(format!("Invalid boolean: {text}")),
    }
}

/// A value that must be one of a fixed set (compared case-insensitively, stored lowercase).
pub fn parse_choice(text: &str, choices: &[&str], what: &str) -> Result<Value, String> {
    let lower = text.trim().to_ascii_lowercase();
    if choices.contains(&lower.as_str()) {
        Ok(Value::Str(lower))
    } else {
        Err(format!("Invalid {what}: {text}"))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn pos_int_accepts_python_int_literals() {
        assert_eq!(parse_pos_int("30").unwrap(), Value::Int(30));
        assert_eq!(parse_pos_int("0x10").unwrap(), Value::Int(16));
        assert_eq!(parse_pos_int("0o17").unwrap(), Value::Int(15));
        assert_eq!(parse_pos_int("1_000").unwrap(), Value::Int(1000));
    }

    #[test]
    fn pos_int_rejects_negatives_and_garbage() {
        assert_eq!(
            parse_pos_int("-1").unwrap_err(),
            "Value must be positive: -1"
        );
        assert!(parse_pos_int("abc")
            .unwrap_err()
            .contains("invalid literal"));
    }

    #[test]
    fn values_display_as_python_repr() {
        assert_eq!(
            Value::List(vec!["a".into(), "b".into()]).to_string(),
            "['a', 'b']"
        );
        assert_eq!(Value::Bool(true).to_string(), "True");
        assert_eq!(Value::None.to_string(), "None");
        assert_eq!(Value::Str("it's".into()).to_string(), "\"it's\"");
    }
}
