//! Where a log's lines go: stderr, stdout or a file reopened after rotation.

use std::fs::{File, OpenOptions};
use std::io::Write;

/// Where a log goes: `-` (stderr for the error log, stdout for the access log) or a file
/// opened for appending, kept by path so it can be reopened after rotation.
pub enum Sink {
    Stderr,
    Stdout,
    File { path: String, file: File },
}

impl Sink {
    /// Opens `path`, where `-` means `dash` (stderr or stdout).
    ///
    /// # Errors
    /// The file cannot be opened for appending.
    pub fn open(path: &str, dash: Sink) -> std::io::Result<Sink> {
        if path == "-" {
            return Ok(dash);
        }
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(Sink::File {
            path: path.to_string(),
            file,
        })
    }

    /// Writes one whole line (already ending in `\n`).
    ///
    /// # Errors
    /// The write failed (disk full, closed pipe); a failed log write is not worth dying for,
    /// so callers report it (or cannot) and go on.
    pub fn write_line(&mut self, line: &[u8]) -> std::io::Result<()> {
        match self {
            Sink::Stderr => std::io::stderr().lock().write_all(line),
            Sink::Stdout => {
                let mut out = std::io::stdout().lock();
                out.write_all(line).and_then(|_| out.flush())
            }
            Sink::File { file, .. } => file.write_all(line),
        }
    }

    /// Where the lines go, for messages: the file's path, `stdout` or `stderr`.
    pub fn describe(&self) -> &str {
        match self {
            Sink::Stderr => "stderr",
            Sink::Stdout => "stdout",
            Sink::File { path, .. } => path,
        }
    }

    /// Reopens a file sink at its path (after logrotate moved it away).
    pub fn reopen(&mut self) {
        if let Sink::File { path, file } = self {
            if let Ok(f) = OpenOptions::new().create(true).append(true).open(&*path) {
                *file = f;
            }
        }
    }
}
