//! Which interpreter a binary is built against when `PYO3_PYTHON` (or the `python3` on
//! `PATH`, as in an activated virtualenv) is a virtualenv's: its base interpreter. The
//! build records the interpreter's path (see `interpreter::choose_executable`); a
//! virtualenv's path would make every run of the binary behave as if that virtualenv were
//! active, whatever `VIRTUAL_ENV` says. A virtualenv links the same libpython as its base,
//! so only the recorded path changes.
//!
//! Shared by `build.rs` (which includes this file) and the crate's unit tests.

use std::path::{Path, PathBuf};

/// The base interpreter of `exe` if it is a virtualenv's (a `pyvenv.cfg` beside its
/// directory or one level above, whose `home` holds `python{minor}` or `python3`);
/// `exe` itself otherwise.
///
/// # Errors
/// `exe` is a virtualenv's, and its base interpreter is not where `pyvenv.cfg` says.
pub fn base_interpreter(exe: &Path, minor: &str) -> Result<PathBuf, String> {
    let Some(bin) = exe.parent() else {
        return Ok(exe.to_path_buf());
    };
    let cfg = [bin.join("pyvenv.cfg"), bin.join("..").join("pyvenv.cfg")]
        .into_iter()
        .find_map(|p| std::fs::read_to_string(&p).ok().map(|text| (p, text)));
    let Some((cfg, text)) = cfg else {
        return Ok(exe.to_path_buf());
    };
    let home = text.lines().find_map(|line| {
        let (key, value) = line.split_once('=')?;
        (key.trim() == "home").then(|| PathBuf::from(value.trim()))
    });
    let Some(home) = home else {
        return Err(format!("{} has no `home`", cfg.display()));
    };
    [format!("python{minor}"), "python3".to_string()]
        .iter()
        .map(|name| home.join(name))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| {
            format!(
                "{} is a virtualenv's interpreter and its base (python{minor} under {}) is \
                 missing; set PYO3_PYTHON to the base interpreter",
                exe.display(),
                home.display()
            )
        })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn scratch(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("rgunicorn-base-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("venv/bin")).unwrap();
        std::fs::create_dir_all(dir.join("base/bin")).unwrap();
        dir
    }

    #[test]
    fn a_virtualenvs_interpreter_gives_way_to_its_base() {
        let dir = scratch("venv");
        let base = dir.join("base/bin/python3.12");
        std::fs::write(&base, "").unwrap();
        let home = dir.join("base/bin");
        std::fs::write(
            dir.join("venv/pyvenv.cfg"),
            format!("home = {}\nversion = 3.12.1\n", home.display()),
        )
        .unwrap();
        let venv_python = dir.join("venv/bin/python");
        assert_eq!(base_interpreter(&venv_python, "3.12").unwrap(), base);
        // Not a virtualenv: unchanged.
        assert_eq!(base_interpreter(&base, "3.12").unwrap(), base);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_virtualenv_whose_base_is_gone_is_refused_with_what_to_do() {
        let dir = scratch("gone");
        std::fs::write(dir.join("venv/pyvenv.cfg"), "home = /nonexistent/bin\n").unwrap();
        let err = base_interpreter(&dir.join("venv/bin/python"), "3.12").unwrap_err();
        assert!(
            err.contains("set PYO3_PYTHON to the base interpreter"),
            "{err}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
