//! What belongs to the operating-system process rather than to serving, shared by the
//! start-up, the master and the workers: the user and group to run as and the privilege
//! drop ([`identity`]), the pid file, the process title, systemd's notifications, and the
//! monotonic clock processes compare.

pub mod clock;
pub mod identity;
pub mod pidfile;
pub mod proctitle;
pub mod systemd;

/// An OS error as Python's `str(OSError)` shows it (`[Errno 98] Address already in use`),
/// for messages that must read as Gunicorn's.
pub fn os_error(e: nix::Error) -> String {
    format!("[Errno {}] {}", e as i32, e.desc())
}
