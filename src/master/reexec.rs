//! USR2: the zero-downtime binary upgrade. The master forks a child that execs the
//! rgunicorn binary (the one at the path we were started from, so a replaced file is the
//! new version) with the original arguments and environment plus `GUNICORN_FD` (the
//! listening descriptors, inherited) and `GUNICORN_PID` (our pid). The new master adopts
//! the sockets, writes `<pidfile>.2`, and is promoted when the old master goes.

use std::ffi::{CString, OsString};
use std::os::fd::RawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use nix::unistd::Pid;

/// What a re-exec needs from the moment the master started (before anything changed).
#[derive(Clone, Debug)]
pub struct StartState {
    pub exe: PathBuf,
    pub argv: Vec<String>,
    pub env: Vec<(OsString, OsString)>,
    pub cwd: PathBuf,
}

impl StartState {
    /// Captures the executable path, arguments, environment and cwd; call first thing.
    pub fn capture(argv: &[String]) -> StartState {
        let exe = std::env::current_exe()
            .unwrap_or_else(|_| PathBuf::from(argv.first().cloned().unwrap_or_default()));
        StartState::capture_with(exe, argv.to_vec())
    }

    /// Like [`StartState::capture`], with the program to execute given: installed with pip,
    /// the process is `python` running the console script, so the new master is started as
    /// `python <script> ARGS...` (or `python -m rgunicorn ARGS...`), never as this file.
    pub fn capture_with(exe: PathBuf, argv: Vec<String>) -> StartState {
        StartState {
            exe,
            argv,
            env: std::env::vars_os().collect(),
            cwd: std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/")),
        }
    }
}

fn cstring(bytes: &[u8]) -> Option<CString> {
    CString::new(bytes).ok()
}

/// Everything the exec needs, allocated before fork: between fork and exec only
/// async-signal-safe calls may run.
pub struct Prepared {
    exe: CString,
    _argv: Vec<CString>,
    _env: Vec<CString>,
    cwd: CString,
    argv_ptrs: Vec<*const nix::libc::c_char>,
    env_ptrs: Vec<*const nix::libc::c_char>,
    fds: Vec<RawFd>,
}

/// Builds the new master's command line and environment.
///
/// # Errors
/// A NUL byte in an argument, a variable or a path.
pub fn prepare(
    start: &StartState,
    listener_fds: &[RawFd],
    master_pid: Pid,
) -> Result<Prepared, String> {
    let exe = cstring(start.exe.as_os_str().as_bytes()).ok_or("executable path contains NUL")?;
    let argv: Vec<CString> = start
        .argv
        .iter()
        .map(|a| cstring(a.as_bytes()))
        .collect::<Option<_>>()
        .ok_or("an argument contains NUL")?;
    let fds: Vec<String> = listener_fds.iter().map(|fd| fd.to_string()).collect();
    let mut env: Vec<CString> = start
        .env
        .iter()
        .filter(|(k, _)| {
            !matches!(
                k.to_str(),
                Some("GUNICORN_FD" | "GUNICORN_PID" | "LISTEN_FDS" | "LISTEN_PID")
            )
        })
        .filter_map(|(k, v)| {
            let mut kv = k.as_bytes().to_vec();
            kv.push(b'=');
            kv.extend_from_slice(v.as_bytes());
            cstring(&kv)
        })
        .collect();
    env.push(cstring(format!("GUNICORN_FD={}", fds.join(",")).as_bytes()).ok_or("fd list")?);
    env.push(cstring(format!("GUNICORN_PID={master_pid}").as_bytes()).ok_or("pid")?);
    let cwd = cstring(start.cwd.as_os_str().as_bytes()).ok_or("cwd contains NUL")?;
    let mut argv_ptrs: Vec<*const nix::libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    argv_ptrs.push(std::ptr::null());
    let mut env_ptrs: Vec<*const nix::libc::c_char> = env.iter().map(|e| e.as_ptr()).collect();
    env_ptrs.push(std::ptr::null());
    Ok(Prepared {
        exe,
        _argv: argv,
        _env: env,
        cwd,
        argv_ptrs,
        env_ptrs,
        fds: listener_fds.to_vec(),
    })
}

impl Prepared {
    /// In the forked child: unblock signals, go back to the start directory, make the
    /// listeners inheritable and exec. Never returns (exit 127 if exec fails).
    pub fn exec(&self) -> ! {
        use nix::fcntl::{fcntl, FcntlArg, FdFlag};
        use nix::sys::signal::{sigprocmask, SigSet, SigmaskHow};
        // Only async-signal-safe calls, on data prepared before fork (no allocation): a
        // new master that could not take the sockets, or start where we did, must not run.
        let prepared = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)
            .and_then(|()| nix::unistd::chdir(self.cwd.as_c_str()))
            .and_then(|()| {
                self.fds.iter().try_for_each(|&fd| {
                    // SAFETY: the listening sockets stay open in this child until exec.
                    let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
                    fcntl(fd, FcntlArg::F_SETFD(FdFlag::empty())).map(drop)
                })
            });
        // SAFETY: the pointer arrays are NULL-terminated and point into CStrings owned by
        // `self`; _exit skips everything inherited from the parent.
        unsafe {
            if prepared.is_err() {
                nix::libc::_exit(127);
            }
            nix::libc::execve(
                self.exe.as_ptr(),
                self.argv_ptrs.as_ptr(),
                self.env_ptrs.as_ptr(),
            );
            nix::libc::_exit(127)
        }
    }
}

/// The listening descriptors and the old master's pid handed to us by a USR2 parent, and
/// then forgotten so our own children do not take them for theirs.
pub fn inherited() -> Option<(Vec<RawFd>, Pid)> {
    let fds = std::env::var("GUNICORN_FD").ok()?;
    let parent = std::env::var("GUNICORN_PID")
        .ok()
        .and_then(|p| p.trim().parse::<i32>().ok());
    std::env::remove_var("GUNICORN_FD");
    std::env::remove_var("GUNICORN_PID");
    let fds: Vec<RawFd> = fds
        .split(',')
        .filter_map(|f| f.trim().parse().ok())
        .collect();
    Some((fds, Pid::from_raw(parent.unwrap_or(0))))
}
