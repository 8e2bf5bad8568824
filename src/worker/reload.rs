//! `--reload`: the worker watches the files of every imported module plus
//! `--reload-extra-file` paths and globs (re-expanded at every check, as Gunicorn 26.1 does);
//! on a change it leaves, and the master starts a fresh worker that imports the new code.
//!
//! Two engines, as Gunicorn's `--reload-engine`: `poll` compares modification times once a
//! second; `inotify` (Linux) watches the directories that hold those files and notices a
//! change to one of them as it happens (the worker's event loop wakes on the inotify
//! descriptor). `auto` is inotify where the kernel offers it, else poll. Unlike Gunicorn's
//! inotify engine, which reloads on any event in a watched directory (a log file written
//! next to the app, a new `__pycache__`), only events naming a watched file count.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use pyo3::prelude::*;
use tracing::{debug, warn};

use crate::config::ReloadEngine;

thread_local! {
    /// Files of a failed import, watched by `--reload` in addition to loaded modules.
    static BROKEN_FILES: std::cell::RefCell<Vec<String>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Notes the files a failed import came from, for `--reload` to watch.
pub fn note_broken_files(files: Vec<String>) {
    BROKEN_FILES.with(|f| *f.borrow_mut() = files);
}

/// Files `--reload` must watch because the app failed to import from them.
pub fn broken_files() -> Vec<String> {
    BROKEN_FILES.with(|f| f.borrow().clone())
}

/// How often files are checked (Gunicorn's poll reloader: 1 s); with inotify, how often the
/// list of files is refreshed (modules imported since, new glob matches).
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
    last_check: Instant,
    engine: Engine,
}

enum Engine {
    /// Each file's modification time at the last check.
    Poll(HashMap<PathBuf, Option<SystemTime>>),
    #[cfg(any(target_os = "linux", target_os = "android"))]
    Inotify(inotify::Watcher),
}

fn mtime(path: &PathBuf) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

impl Reloader {
    /// Starts watching (after the app was imported) with the engine asked for. Where
    /// inotify cannot be used, it polls: silently for `auto`, with a warning for `inotify`.
    pub fn new(py: Python<'_>, extra: &[String], engine: ReloadEngine) -> Reloader {
        let mut r = Reloader {
            extra: extra.to_vec(),
            last_check: Instant::now(),
            engine: Engine::Poll(HashMap::new()),
        };
        if engine != ReloadEngine::Poll {
            match inotify_engine() {
                Ok(engine) => r.engine = engine,
                Err(why) if engine == ReloadEngine::Inotify => {
                    warn!("reload_engine 'inotify' is not available ({why}): polling instead");
                }
                Err(why) => debug!("inotify is not available ({why}): the reloader polls"),
            }
        }
        let files = r.files(py);
        match &mut r.engine {
            Engine::Poll(mtimes) => {
                for path in files {
                    let t = mtime(&path);
                    mtimes.insert(path, t);
                }
            }
            #[cfg(any(target_os = "linux", target_os = "android"))]
            Engine::Inotify(watcher) => watcher.watch(files),
        }
        r
    }

    /// The descriptor to wake the event loop on when a watched file changes (inotify).
    pub fn fd(&self) -> Option<std::os::fd::RawFd> {
        match &self.engine {
            Engine::Poll(_) => None,
            #[cfg(any(target_os = "linux", target_os = "android"))]
            Engine::Inotify(watcher) => Some(watcher.fd()),
        }
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

    /// The first watched file that changed: with inotify, as soon as an event names one;
    /// polling, at most once a second.
    pub fn changed(&mut self, py: Python<'_>) -> Option<PathBuf> {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        if let Engine::Inotify(watcher) = &mut self.engine {
            if let Some(path) = watcher.changed() {
                return Some(path);
            }
        }
        if self.last_check.elapsed() < CHECK_INTERVAL {
            return None;
        }
        self.last_check = Instant::now();
        let files = self.files(py);
        match &mut self.engine {
            Engine::Poll(mtimes) => {
                for path in files {
                    let now = mtime(&path);
                    match mtimes.get(&path) {
                        Some(before) if *before == now => {}
                        // A new module imported since (lazily, by a request): watch it from
                        // now on.
                        None => {
                            mtimes.insert(path, now);
                        }
                        Some(_) => return Some(path),
                    }
                }
                None
            }
            #[cfg(any(target_os = "linux", target_os = "android"))]
            Engine::Inotify(watcher) => {
                watcher.watch(files);
                None
            }
        }
    }
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn inotify_engine() -> Result<Engine, String> {
    inotify::Watcher::new()
        .map(Engine::Inotify)
        .map_err(|e| e.desc().to_string())
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn inotify_engine() -> Result<Engine, String> {
    Err("inotify is Linux's".to_string())
}

#[cfg(any(target_os = "linux", target_os = "android"))]
mod inotify {
    use std::collections::{HashMap, HashSet};
    use std::os::fd::{AsFd, AsRawFd, RawFd};
    use std::path::{Path, PathBuf};

    use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};

    /// What happens to a file that an editor saves: written in place (`IN_MODIFY`,
    /// `IN_CLOSE_WRITE`), replaced by a rename (`IN_MOVED_TO`), removed and recreated,
    /// or touched (`IN_ATTRIB`: the poll engine sees a new mtime too).
    fn mask() -> AddWatchFlags {
        AddWatchFlags::IN_MODIFY
            | AddWatchFlags::IN_CLOSE_WRITE
            | AddWatchFlags::IN_ATTRIB
            | AddWatchFlags::IN_CREATE
            | AddWatchFlags::IN_DELETE
            | AddWatchFlags::IN_MOVED_FROM
            | AddWatchFlags::IN_MOVED_TO
    }

    /// Watches the directories of the watched files (inotify watches on the files
    /// themselves would be lost when an editor replaces a file by renaming over it).
    pub struct Watcher {
        inotify: Inotify,
        /// Each watch and the directory paths it was added for (two paths to one directory
        /// share a watch).
        dirs: HashMap<WatchDescriptor, Vec<PathBuf>>,
        watched: HashSet<PathBuf>,
        /// The path an event names -> the watched file it stands for (a symlink's target
        /// stands for the link).
        targets: HashMap<PathBuf, PathBuf>,
    }

    impl Watcher {
        pub fn new() -> nix::Result<Watcher> {
            Ok(Watcher {
                inotify: Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)?,
                dirs: HashMap::new(),
                watched: HashSet::new(),
                targets: HashMap::new(),
            })
        }

        pub fn fd(&self) -> RawFd {
            self.inotify.as_fd().as_raw_fd()
        }

        /// Watches `files` from now on (the list replaces the previous one).
        pub fn watch(&mut self, files: Vec<PathBuf>) {
            self.targets.clear();
            for file in files {
                let abs = std::path::absolute(&file).unwrap_or_else(|_| file.clone());
                let mut names = vec![abs.clone()];
                // Edits to a symlink's target make no event in the link's directory.
                if abs.is_symlink() {
                    if let Ok(real) = std::fs::canonicalize(&abs) {
                        names.push(real);
                    }
                }
                for name in names {
                    if let Some(dir) = name.parent() {
                        self.add_dir(dir);
                    }
                    self.targets.insert(name, file.clone());
                }
            }
        }

        fn add_dir(&mut self, dir: &Path) {
            if self.watched.contains(dir) {
                return;
            }
            // A directory that does not exist (yet) is tried again at the next refresh.
            if let Ok(wd) = self.inotify.add_watch(dir, mask()) {
                self.dirs.entry(wd).or_default().push(dir.to_path_buf());
                self.watched.insert(dir.to_path_buf());
            }
        }

        /// Reads what the kernel queued; the first event naming a watched file wins.
        pub fn changed(&mut self) -> Option<PathBuf> {
            // Read to EAGAIN: the event loop's registration is edge-triggered.
            while let Ok(events) = self.inotify.read_events() {
                if events.is_empty() {
                    break;
                }
                for event in events {
                    if event.mask.contains(AddWatchFlags::IN_IGNORED) {
                        // The directory went away: forget it, so a refresh watches it anew.
                        for dir in self.dirs.remove(&event.wd).unwrap_or_default() {
                            self.watched.remove(&dir);
                        }
                        continue;
                    }
                    let (Some(dirs), Some(name)) = (self.dirs.get(&event.wd), &event.name) else {
                        continue;
                    };
                    if let Some(file) = dirs
                        .iter()
                        .find_map(|dir| self.targets.get(&dir.join(name)))
                    {
                        return Some(file.clone());
                    }
                }
            }
            None
        }
    }

    #[cfg(test)]
    #[allow(clippy::unwrap_used)]
    mod tests {
        use super::*;

        fn scratch(tag: &str) -> PathBuf {
            let dir =
                std::env::temp_dir().join(format!("rgunicorn-reload-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            dir
        }

        #[test]
        fn only_events_naming_a_watched_file_count() {
            let dir = scratch("names");
            let app = dir.join("app.py");
            std::fs::write(&app, "one").unwrap();
            let mut w = Watcher::new().unwrap();
            w.watch(vec![app.clone()]);
            assert_eq!(w.changed(), None);
            // A log file and a cache directory next to the app are not the app.
            std::fs::write(dir.join("app.log"), "x").unwrap();
            std::fs::create_dir(dir.join("__pycache__")).unwrap();
            assert_eq!(w.changed(), None);
            std::fs::write(&app, "two").unwrap();
            assert_eq!(w.changed(), Some(app.clone()));
            // The write's other events (a worker would have left by now).
            while w.changed().is_some() {}
            // Replaced by a rename, as editors save.
            std::fs::write(dir.join("app.py.tmp"), "three").unwrap();
            std::fs::rename(dir.join("app.py.tmp"), &app).unwrap();
            assert_eq!(w.changed(), Some(app.clone()));
            std::fs::remove_dir_all(&dir).unwrap();
        }

        #[test]
        fn a_symlinks_target_is_watched_for_the_link() {
            let dir = scratch("link");
            std::fs::create_dir(dir.join("real")).unwrap();
            let target = dir.join("real").join("mod.py");
            std::fs::write(&target, "one").unwrap();
            let link = dir.join("mod.py");
            std::os::unix::fs::symlink(&target, &link).unwrap();
            let mut w = Watcher::new().unwrap();
            w.watch(vec![link.clone()]);
            std::fs::write(&target, "two").unwrap();
            assert_eq!(w.changed(), Some(link));
            std::fs::remove_dir_all(&dir).unwrap();
        }
    }
}
