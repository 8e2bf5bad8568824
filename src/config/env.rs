//! `GUNICORN_CMD_ARGS`: extra command-line arguments from the environment, split with
//! POSIX shell rules (Gunicorn uses `shlex.split`).

/// Splits `text` the way `shlex.split` does (quotes, backslash escapes, no expansion).
///
/// # Errors
/// An unterminated quote or a trailing backslash, with Python's wording.
pub fn shell_split(text: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => return Err("No closing quotation".to_string()),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$' | '`')) => word.push(c),
                            Some('\n') => {}
                            Some(c) => {
                                word.push('\\');
                                word.push(c);
                            }
                            None => return Err("No closing quotation".to_string()),
                        },
                        Some(c) => word.push(c),
                        None => return Err("No closing quotation".to_string()),
                    }
                }
            }
            '\\' => {
                in_word = true;
                match chars.next() {
                    Some('\n') => {}
                    Some(c) => word.push(c),
                    None => return Err("No escaped character".to_string()),
                }
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::shell_split;

    #[test]
    fn splits_like_shlex() {
        assert_eq!(
            shell_split(r#"-w 3 --access-logformat '%(h)s "%(r)s"' -b "a b""#).unwrap(),
            vec![
                "-w",
                "3",
                "--access-logformat",
                r#"%(h)s "%(r)s""#,
                "-b",
                "a b"
            ]
        );
        assert_eq!(shell_split(r"a\ b c").unwrap(), vec!["a b", "c"]);
        assert_eq!(shell_split("  ").unwrap(), Vec::<String>::new());
    }

    #[test]
    fn unterminated_quote_is_an_error() {
        assert!(shell_split("'abc").is_err());
    }
}
