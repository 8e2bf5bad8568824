//! The master's signal queue: handlers only count the signal and poke a self-pipe; the
//! main loop wakes on the pipe and handles each pending signal by name (Gunicorn: "NO
//! LOGGING, just queue the signal").

use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::Signal;

/// The signals the master handles, in the order a burst of them is processed.
pub const MASTER_SIGNALS: [Signal; 10] = [
    Signal::SIGQUIT,
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGTTIN,
    Signal::SIGTTOU,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGWINCH,
    Signal::SIGCHLD,
];

/// Pending-signal counters plus the pipe that wakes the loop.
pub struct SignalQueue {
    counts: Arc<[AtomicUsize; 10]>,
    wake_read: UnixStream,
    /// The write end, which workers inherit to wake the master (see [`SignalQueue::notice_fd`]).
    wake_write: UnixStream,
    /// The actions as installed, to put back if Python code in the master replaced one.
    installed: Vec<(Signal, nix::libc::sigaction)>,
}

/// The action in force for `sig` (None if it cannot be read).
fn current_action(sig: Signal) -> Option<nix::libc::sigaction> {
    // SAFETY: a null new action only reads the current one into `old`, which is plain data
    // (nix has no query-only wrapper).
    unsafe {
        let mut old: nix::libc::sigaction = std::mem::zeroed();
        (nix::libc::sigaction(sig as i32, std::ptr::null(), &mut old) == 0).then_some(old)
    }
}

impl SignalQueue {
    /// Installs the handlers. Call before the interpreter starts, so Python never sees
    /// SIGINT at its default disposition (it would install its KeyboardInterrupt handler).
    ///
    /// # Errors
    /// A handler could not be installed.
    pub fn install() -> std::io::Result<SignalQueue> {
        let (wake_read, wake_write) = UnixStream::pair()?;
        wake_read.set_nonblocking(true)?;
        let counts: Arc<[AtomicUsize; 10]> = Arc::new(Default::default());
        for (i, sig) in MASTER_SIGNALS.iter().enumerate() {
            let counts = Arc::clone(&counts);
            // SAFETY: the action only does an atomic increment, which is async-signal-safe.
            unsafe {
                signal_hook::low_level::register(*sig as i32, move || {
                    counts[i].fetch_add(1, Ordering::SeqCst);
                })?;
            }
            signal_hook::low_level::pipe::register(*sig as i32, wake_write.try_clone()?)?;
        }
        let installed = MASTER_SIGNALS
            .iter()
            .filter_map(|&sig| current_action(sig).map(|action| (sig, action)))
            .collect();
        Ok(SignalQueue {
            counts,
            wake_read,
            wake_write,
            installed,
        })
    }

    /// Puts back the master's handlers that Python code replaced (a configuration file or
    /// a preloaded app calling `signal.signal`: the master would then never see that
    /// signal, and could not be stopped or reloaded); returns the signals it had to.
    pub fn reclaim(&self) -> Vec<Signal> {
        let mut replaced = Vec::new();
        for (sig, ours) in &self.installed {
            let Some(now) = current_action(*sig) else {
                continue;
            };
            if now.sa_sigaction != ours.sa_sigaction {
                // SAFETY: reinstalls the exact action signal-hook installed (its handler
                // and flags); the old action is not needed.
                unsafe { nix::libc::sigaction(*sig as i32, ours, std::ptr::null_mut()) };
                replaced.push(*sig);
            }
        }
        replaced
    }

    /// The read end of the wake-up pipe (closed in workers).
    /// What a worker writes a byte to (with `MSG_DONTWAIT`) to wake the master's loop: a
    /// descriptor, not a signal, as a worker that dropped privileges may not signal a root
    /// master.
    pub fn notice_fd(&self) -> std::os::fd::RawFd {
        std::os::fd::AsRawFd::as_raw_fd(&self.wake_write)
    }

    pub fn wake_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.wake_read.as_fd()
    }

    /// Waits until a signal arrives or `timeout` passes.
    pub fn wait(&self, timeout: Duration) {
        self.wait_also(timeout, &[]);
    }

    /// [`SignalQueue::wait`], also waking when one of `others` is readable (or writable,
    /// for those marked so): the control socket and its clients.
    pub fn wait_also(&self, timeout: Duration, others: &[(std::os::fd::BorrowedFd<'_>, bool)]) {
        let ms = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
        let mut fds = vec![PollFd::new(self.wake_read.as_fd(), PollFlags::POLLIN)];
        fds.extend(others.iter().map(|(fd, writable)| {
            let flags = if *writable {
                PollFlags::POLLOUT
            } else {
                PollFlags::POLLIN
            };
            PollFd::new(*fd, flags)
        }));
        let _ = poll(&mut fds, PollTimeout::from(ms));
        let mut sink = [0u8; 64];
        while nix::unistd::read(&self.wake_read, &mut sink).is_ok_and(|n| n > 0) {}
    }

    /// Takes every pending signal, once per delivery, in `MASTER_SIGNALS` order.
    pub fn drain(&self) -> Vec<Signal> {
        let mut out = Vec::new();
        for (i, sig) in MASTER_SIGNALS.iter().enumerate() {
            let n = self.counts[i].swap(0, Ordering::SeqCst);
            // CHLD bursts collapse into one reap pass; others keep their count (TTIN x3 = 3).
            let n = if *sig == Signal::SIGCHLD {
                n.min(1)
            } else {
                n.min(16)
            };
            out.extend(std::iter::repeat_n(*sig, n));
        }
        out
    }
}

/// The master's signals as a set, for blocking them around `fork()`: a signal sent to a
/// new worker before it installed its own handlers would otherwise run the master's
/// (inherited) handler in the child and be lost.
pub fn master_sigset() -> nix::sys::signal::SigSet {
    let mut set = nix::sys::signal::SigSet::empty();
    for sig in MASTER_SIGNALS {
        set.add(sig);
    }
    set
}

/// Gunicorn's lowercase signal names for `Handling signal: <name>`.
pub fn signal_name(sig: Signal) -> String {
    sig.as_str().trim_start_matches("SIG").to_ascii_lowercase()
}
