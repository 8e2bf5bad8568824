//! `--reload`: the worker watches the files of every imported module plus
//! `--reload-extra-file` paths and globs (re-expanded at every check, as Gunicorn 26.1 does),
//! polling once a second from its event loop; on a change it leaves, and the master starts a
//! fresh worker that imports the new code.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use pyo3::prelude::*;

/// How often files are checked (Gunicorn's poll reloader: 1 s).
const CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// Python side: the files of loaded modules and the expansion of the extra patterns.
const WATCHED_FILES: &std::ffi::CStr = c"
import sys, glob
files = set()
for m in list(sys.modules.values()):
    f = getattr(m, '__file__', None)
    if isinstance(f, str):
        files.add(f)
for pattern in extra:
    files.update(glob.glob(pattern, recursive=True) or [pattern])
out = sorted(files)
";

pub struct Reloader {
    extra: Vec<String>,
    mtimes: HashMap<PathBuf, Option<SystemTime>>,
    last_check: Instant,
}

fn mtime(path: &PathBuf) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

impl Reloader {
    /// Takes the first snapshot (after the app was imported).
    pub fn new(py: Python<'_>, extra: &[String]) -> Reloader {
        let mut r = Reloader {
            extra: extra.to_vec(),
            mtimes: HashMap::new(),
            last_check: Instant::now(),
        };
        for path in r.files(py) {
            let t = mtime(&path);
            r.mtimes.insert(path, t);
        }
        r
    }

    fn files(&self, py: Python<'_>) -> Vec<PathBuf> {
        let globals = pyo3::types::PyDict::new(py);
        let run = || -> PyResult<Vec<String>> {
            globals.set_item("extra", &self.extra)?;
            py.run(WATCHED_FILES, Some(&globals), None)?;
            globals
                .get_item("out")?
                .map(|o| o.extract())
                .unwrap_or_else(|| Ok(Vec::new()))
        };
        run()
            .unwrap_or_default()
            .into_iter()
            .map(PathBuf::from)
            .collect()
    }

    /// The first watched file that changed since the last check (at most once a second).
    pub fn changed(&mut self, py: Python<'_>) -> Option<PathBuf> {
        if self.last_check.elapsed() < CHECK_INTERVAL {
            return None;
        }
        self.last_check = Instant::now();
        for path in self.files(py) {
            let now = mtime(&path);
            match self.mtimes.get(&path) {
                Some(before) if *before == now => {}
                // A new module imported since (lazily, by a request): watch it from now on.
                None => {
                    self.mtimes.insert(path, now);
                }
                Some(_) => return Some(path),
            }
        }
        None
    }
}
