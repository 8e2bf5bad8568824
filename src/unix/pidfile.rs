//! The master's PID file (`-p/--pid`): written atomically, refused when it names a live
//! process, renamed on USR2 promotion, removed on exit only while it still holds our pid.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::sys::signal::kill;
use nix::unistd::Pid;

/// A PID file this process wrote.
#[derive(Debug)]
pub struct Pidfile {
    path: PathBuf,
    pid: i32,
}

fn holds_live_pid(path: &Path, ours: i32) -> Option<i32> {
    let text = std::fs::read_to_string(path).ok()?;
    let pid: i32 = text.trim().parse().ok()?;
    // kill(pid, 0) succeeds (or fails with EPERM) only for a process that exists.
    let alive = pid > 0
        && (kill(Pid::from_raw(pid), None).is_ok()
            || nix::errno::Errno::last() == nix::errno::Errno::EPERM);
    (pid != ours && alive).then_some(pid)
}

fn write_atomically(path: &Path, pid: i32) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{pid}.tmp"));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .open(&tmp)?;
    file.write_all(format!("{pid}\n").as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

impl Pidfile {
    /// Writes `pid` to `path`.
    ///
    /// # Errors
    /// The file names another live process (Gunicorn's message), or it cannot be written.
    pub fn create(path: &Path, pid: i32) -> Result<Pidfile, String> {
        if let Some(other) = holds_live_pid(path, pid) {
            return Err(format!(
                "Already running on PID {other} (or pid file '{}' is stale)",
                path.display()
            ));
        }
        write_atomically(path, pid)
            .map_err(|e| format!("can't write pid file '{}': {e}", path.display()))?;
        Ok(Pidfile {
            path: path.to_path_buf(),
            pid,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Moves the file (a promoted USR2 master drops the `.2` suffix).
    pub fn rename(&mut self, to: &Path) {
        if std::fs::rename(&self.path, to).is_ok() {
            self.path = to.to_path_buf();
        }
    }

    /// Removes the file if it still names us (a newer master may own it by now).
    pub fn unlink(&self) {
        let ours = std::fs::read_to_string(&self.path)
            .ok()
            .and_then(|t| t.trim().parse::<i32>().ok())
            == Some(self.pid);
        if ours {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("rg-pidfile-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("app.pid")
    }

    #[test]
    fn writes_our_pid_and_removes_it() {
        let path = temp("own");
        let me = std::process::id() as i32;
        let pf = Pidfile::create(&path, me).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), format!("{me}\n"));
        pf.unlink();
        assert!(!path.exists());
    }

    #[test]
    fn refuses_a_file_naming_a_live_process() {
        let path = temp("live");
        // Our parent (the test runner's parent) is alive and is not us.
        let parent = nix::unistd::getppid().as_raw();
        std::fs::write(&path, format!("{parent}\n")).unwrap();
        let err = Pidfile::create(&path, std::process::id() as i32).unwrap_err();
        assert!(
            err.starts_with(&format!("Already running on PID {parent}")),
            "{err}"
        );
    }

    #[test]
    fn replaces_a_stale_file() {
        let path = temp("stale");
        std::fs::write(&path, "999999999\n").unwrap();
        assert!(Pidfile::create(&path, std::process::id() as i32).is_ok());
    }

    #[test]
    fn leaves_a_file_that_names_someone_else() {
        let path = temp("other");
        let pf = Pidfile::create(&path, std::process::id() as i32).unwrap();
        std::fs::write(&path, "1\n").unwrap();
        pf.unlink();
        assert!(path.exists());
    }
}
