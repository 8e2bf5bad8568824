//! The crate map in `src/lib.rs`, checked: modules are layers, and a module uses only the
//! layers below it. Inside a module the files are ordered the same way, each file above the
//! files it uses; `mod.rs` (the module's face) is usually first, and may be lower where its
//! files use it rather than it them. So no two files use each other, directly or around a
//! loop.
//!
//! The order is written once, below. A new module or file must be placed in it, and a `use`
//! that points upward fails with the file, the line and what it reached for. Tests are not
//! layered: `#[cfg(test)]` items are skipped, and so are `x/tests.rs` files (a long test
//! module of `x.rs`, kept apart so the code reads on its own).

use std::path::{Path, PathBuf};

/// Top to bottom: each module with its files (without `.rs`), top to bottom. A module that is
/// one file has no list.
const LAYERS: &[(&str, &[&str])] = &[
    ("process", &["extension", "mod"]),
    (
        "master",
        &[
            "steering",
            "recycling",
            "hooks",
            "mod",
            "control",
            "commands",
            "json",
            "metrics",
            "prometheus",
            "service",
            "workers",
            "recycle",
            "reexec",
            "signals",
        ],
    ),
    (
        "worker",
        &[
            "mod",
            "static_route",
            "dispatch",
            "accept",
            "conns",
            "event_loop",
            "conn",
            "statics",
            "pool",
            "object",
            "hooks",
            "seed",
            "keeper",
            "handoff",
            "conn_table",
            "signals",
            "heartbeat",
            "reload",
        ],
    ),
    (
        "wsgi",
        &[
            "mod",
            "hooks",
            "reuse",
            "call",
            "in_hand",
            "app",
            "input",
            "response",
            "app_head",
            "stream",
            "environ",
            "errors",
            "file_wrapper",
        ],
    ),
    ("transport", &["mod", "tls", "outbox", "wait", "sys"]),
    (
        "config",
        &[
            "mod", "cli", "env", "file", "hooks", "defs", "parse", "setting", "error",
        ],
    ),
    (
        "python",
        &["interpreter", "fork", "hooks", "mod", "base_interpreter"],
    ),
    (
        "log",
        &[
            "mod", "access", "statsd", "meters", "syslog", "python", "sink", "udp", "level", "time",
        ],
    ),
    (
        "http",
        &[
            "mod",
            "corpus",
            "files",
            "body",
            "request",
            "request_line",
            "head",
            "response",
            "error",
            "proxy",
            "date",
            "syntax",
            "text",
        ],
    ),
    ("tls", &[]),
    ("sock", &[]),
    (
        "unix",
        &[
            "mod",
            "identity",
            "pidfile",
            "proctitle",
            "systemd",
            "clock",
        ],
    ),
    ("error", &[]),
];

/// Items of the crate root that any module may name (`crate::VERSION`, exported macros).
const ROOT_ITEMS: &[&str] = &["VERSION", "critical"];

/// A place in the layering: (module index, file index within the module).
type Place = (usize, usize);

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn module_index(name: &str) -> Option<usize> {
    LAYERS.iter().position(|(m, _)| *m == name)
}

fn file_index(module: usize, name: &str) -> Option<usize> {
    LAYERS[module].1.iter().position(|f| *f == name)
}

/// Every source file of a layered module, with its place.
fn layered_files() -> Vec<(PathBuf, Place)> {
    let mut out = Vec::new();
    for (m, (module, files)) in LAYERS.iter().enumerate() {
        if files.is_empty() {
            out.push((src_dir().join(format!("{module}.rs")), (m, 0)));
        } else {
            for (f, file) in files.iter().enumerate() {
                out.push((src_dir().join(module).join(format!("{file}.rs")), (m, f)));
            }
        }
    }
    out
}

/// The source without comments, string and character literals, and `#[cfg(test)]` items
/// (tests may reach anywhere). Line breaks are kept, so line numbers stay true.
fn code_only(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let blank = |out: &mut String, s: &[u8]| {
        for &b in s {
            out.push(if b == b'\n' { '\n' } else { ' ' });
        }
    };
    while i < bytes.len() {
        let rest = &bytes[i..];
        if rest.starts_with(b"//") {
            let end = rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
            blank(&mut out, &rest[..end]);
            i += end;
        } else if rest.starts_with(b"/*") {
            let end = text[i + 2..].find("*/").map_or(rest.len(), |e| e + 4);
            blank(&mut out, &rest[..end]);
            i += end;
        } else if let Some(len) = raw_string_len(rest) {
            blank(&mut out, &rest[..len]);
            i += len;
        } else if rest[0] == b'"' {
            let mut j = 1;
            while j < rest.len() && rest[j] != b'"' {
                j += if rest[j] == b'\\' { 2 } else { 1 };
            }
            let len = (j + 1).min(rest.len());
            blank(&mut out, &rest[..len]);
            i += len;
        } else if rest[0] == b'\'' {
            // A character literal ('x', '\n', '\u{..}'), or else a lifetime.
            let len = if rest.get(1) == Some(&b'\\') {
                rest.iter()
                    .skip(2)
                    .position(|&b| b == b'\'')
                    .map_or(1, |p| p + 3)
            } else if rest.get(2) == Some(&b'\'') {
                3
            } else {
                1
            };
            blank(&mut out, &rest[..len]);
            i += len;
        } else {
            let c = text[i..].chars().next().unwrap_or(' ');
            out.push(c);
            i += c.len_utf8();
        }
    }
    strip_test_items(&out)
}

/// The length of a raw string literal (`r"…"`, `r#"…"#`, `br"…"`, `cr"…"`) at the start.
fn raw_string_len(s: &[u8]) -> Option<usize> {
    let mut j = match s {
        [b'r', ..] => 1,
        [b'b' | b'c', b'r', ..] => 2,
        _ => return None,
    };
    let hashes = s[j..].iter().take_while(|&&b| b == b'#').count();
    j += hashes;
    if s.get(j) != Some(&b'"') {
        return None;
    }
    let closing: Vec<u8> = std::iter::once(b'"')
        .chain(std::iter::repeat_n(b'#', hashes))
        .collect();
    let end = s[j + 1..]
        .windows(closing.len())
        .position(|w| w == closing.as_slice())?;
    Some(j + 1 + end + closing.len())
}

/// Blanks each `#[cfg(test)]` item (a `mod tests { … }` or a single function).
fn strip_test_items(code: &str) -> String {
    let mut out = code.to_string();
    while let Some(at) = out.find("#[cfg(test)]") {
        let bytes = out.as_bytes();
        let mut depth = 0usize;
        let mut end = out.len();
        for (k, &b) in bytes.iter().enumerate().skip(at) {
            match b {
                b'{' => depth += 1,
                b'}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = k + 1;
                        break;
                    }
                }
                b';' if depth == 0 => {
                    end = k + 1;
                    break;
                }
                _ => {}
            }
        }
        let blanked: String = out[at..end]
            .chars()
            .map(|c| if c == '\n' { '\n' } else { ' ' })
            .collect();
        out.replace_range(at..end, &blanked);
    }
    out
}

/// Inside an inline `mod name { … }`, `super::` is the file itself: those are renamed so
/// they are not read as reaching for a sibling.
fn resolve_inline_modules(code: &str) -> String {
    let mut out = code.to_string();
    let mut from = 0;
    while let Some(found) = next_inline_mod(&out, from) {
        let mut depth = 0usize;
        let mut end = out.len();
        for (k, b) in out.bytes().enumerate().skip(found) {
            match b {
                b'{' => depth += 1,
                b'}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = k;
                        break;
                    }
                }
                _ => {}
            }
        }
        let inner = out[found..end].replace("super::", "self_::");
        out.replace_range(found..end, &inner);
        from = end;
    }
    out
}

/// The position of the `{` of the next `mod name {` at or after `from`.
fn next_inline_mod(code: &str, from: usize) -> Option<usize> {
    let mut search = from;
    while let Some(p) = code[search..].find("mod ") {
        let at = search + p;
        let before_ok = at == 0 || !code.as_bytes()[at - 1].is_ascii_alphanumeric();
        let rest = &code[at + 4..];
        let name_len = rest
            .bytes()
            .take_while(|b| b.is_ascii_alphanumeric() || *b == b'_')
            .count();
        let after = rest[name_len..].trim_start();
        if before_ok && name_len > 0 && after.starts_with('{') {
            return Some(at + 4 + name_len + (rest[name_len..].len() - after.len()));
        }
        search = at + 4;
    }
    None
}

/// The first path segment of each path a `use` tree names after its prefix: `a::b` → `a`,
/// `{a, b::c, d::{e}}` → `a`, `b`, `d`.
fn first_segments(tree: &str) -> Vec<String> {
    let tree = tree.trim();
    if let Some(inner) = tree.strip_prefix('{') {
        let inner = inner.strip_suffix('}').unwrap_or(inner);
        let mut parts = Vec::new();
        let mut depth = 0;
        let mut start = 0;
        for (k, c) in inner.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    parts.push(&inner[start..k]);
                    start = k + 1;
                }
                _ => {}
            }
        }
        parts.push(&inner[start..]);
        return parts
            .into_iter()
            .flat_map(|p| first_segments(p).into_iter().take(1))
            .collect();
    }
    let name: String = tree
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    if name.is_empty() {
        Vec::new()
    } else {
        vec![name]
    }
}

/// Each (line, prefix, name) where the code names `prefix::name` (`crate`, `super` or
/// `self`), including every branch of a `use prefix::{…}` tree.
fn references(code: &str) -> Vec<(usize, &'static str, String)> {
    let mut out = Vec::new();
    for prefix in ["crate", "super", "self"] {
        let pattern = format!("{prefix}::");
        let mut from = 0;
        while let Some(p) = code[from..].find(&pattern) {
            let at = from + p;
            from = at + pattern.len();
            let before = code[..at].chars().next_back();
            if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') {
                continue;
            }
            let line = code[..at].matches('\n').count() + 1;
            let rest = &code[from..];
            let tree = if rest.starts_with('{') {
                let mut depth = 0;
                let end = rest
                    .char_indices()
                    .find(|&(_, c)| {
                        match c {
                            '{' => depth += 1,
                            '}' => depth -= 1,
                            _ => {}
                        }
                        depth == 0
                    })
                    .map_or(rest.len(), |(k, _)| k + 1);
                &rest[..end]
            } else {
                rest
            };
            for name in first_segments(tree) {
                out.push((line, prefix, name));
            }
        }
    }
    out
}

/// What a reference from a file at `from` reaches: a place, or None for what is outside
/// the layering (the crate root's items, or the file itself).
fn target(from: Place, is_mod_rs: bool, prefix: &str, name: &str) -> Result<Option<Place>, String> {
    let (module, _) = from;
    let files = LAYERS[module].1;
    match prefix {
        "crate" => {
            if ROOT_ITEMS.contains(&name) {
                return Ok(None);
            }
            let m =
                module_index(name).ok_or_else(|| format!("`crate::{name}` is not in LAYERS"))?;
            // `crate::this_module::x` was read as `super::x` / `self::x` (see the caller).
            Ok((m != module).then_some((m, 0)))
        }
        // In mod.rs, `self::child` is a file of the module; `super::` would leave it.
        "self" if is_mod_rs => Ok(file_index(module, name).map(|f| (module, f))),
        "self" => Ok(None),
        _ if is_mod_rs => Err(format!("`super::{name}` from a mod.rs leaves the module")),
        _ if files.is_empty() => Err(format!("`super::{name}` in a one-file module")),
        // A sibling file, or else an item of mod.rs.
        _ => Ok(file_index(module, name)
            .or_else(|| file_index(module, "mod"))
            .map(|f| (module, f))),
    }
}

fn describe(place: Place) -> String {
    let (module, files) = LAYERS[place.0];
    if files.is_empty() {
        module.to_string()
    } else {
        format!("{module}/{}", files[place.1])
    }
}

#[test]
fn every_source_file_has_a_place_in_the_layering() {
    let placed: Vec<PathBuf> = layered_files().into_iter().map(|(p, _)| p).collect();
    let mut unplaced = Vec::new();
    let mut stack = vec![src_dir()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("src/ is readable") {
            let path = entry.expect("a directory entry").path();
            let crate_root = dir == src_dir()
                && path
                    .file_name()
                    .is_some_and(|n| n == "lib.rs" || n == "main.rs");
            // `x/tests.rs` is the `#[cfg(test)] mod tests;` of `x.rs`: tests reach anywhere.
            let tests = path.file_name().is_some_and(|n| n == "tests.rs");
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs")
                && !crate_root
                && !tests
                && !placed.contains(&path)
            {
                let shown = path.strip_prefix(src_dir()).unwrap_or(&path);
                unplaced.push(shown.display().to_string());
            }
        }
    }
    for path in &placed {
        assert!(
            path.exists(),
            "LAYERS names {}, which does not exist",
            path.display()
        );
    }
    assert!(
        unplaced.is_empty(),
        "files missing from LAYERS in tests/layering.rs: {unplaced:?}"
    );
}

#[test]
fn no_module_or_file_uses_one_above_it() {
    let mut upward = Vec::new();
    for (path, from) in layered_files() {
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue; // reported by the other test
        };
        let is_mod_rs = path.file_name().is_some_and(|n| n == "mod.rs");
        // A file naming its own module from the root means a sibling (or the face).
        let own = format!("crate::{}::", LAYERS[from.0].0);
        let code = resolve_inline_modules(&code_only(&text)).replace(
            &own,
            if is_mod_rs || LAYERS[from.0].1.is_empty() {
                "self::"
            } else {
                "super::"
            },
        );
        for (line, prefix, name) in references(&code) {
            match target(from, is_mod_rs, prefix, &name) {
                Ok(Some(to)) if to < from => upward.push(format!(
                    "{}:{line}: `{prefix}::{name}` reaches {} above {}",
                    path.strip_prefix(src_dir()).unwrap_or(&path).display(),
                    describe(to),
                    describe(from),
                )),
                Ok(_) => {}
                Err(why) => upward.push(format!(
                    "{}:{line}: {why}",
                    path.strip_prefix(src_dir()).unwrap_or(&path).display()
                )),
            }
        }
    }
    assert!(
        upward.is_empty(),
        "uses that point upward (reorder LAYERS in tests/layering.rs only if the map in \
         src/lib.rs changes with it):\n{}",
        upward.join("\n")
    );
}

#[test]
fn the_reader_sees_through_comments_strings_and_tests() {
    let code = code_only(
        "use crate::a; // crate::b\nlet s = \"crate::c\"; let r = r#\"crate::d\"#;\n\
         let ch = '{'; fn f<'x>() {}\n#[cfg(test)]\nmod tests { use crate::e; }\nuse super::{f, g::{h}};",
    );
    let names: Vec<(usize, &str, String)> = references(&code);
    assert_eq!(
        names,
        vec![
            (1, "crate", "a".to_string()),
            (6, "super", "f".to_string()),
            (6, "super", "g".to_string()),
        ]
    );
    let inline = resolve_inline_modules("mod linux { use super::x; }\nuse super::y;");
    let names: Vec<String> = references(&inline).into_iter().map(|(_, _, n)| n).collect();
    assert_eq!(names, vec!["y".to_string()]);
}
