//! A worker's crash costs only its request in flight, not its idle keep-alive connections.
//!
//! A worker killed by SIGKILL (the OOM killer, `kill -9`, a timeout's second pass) or a
//! segfault cannot pass anything on, and its descriptor table dies with it. So each worker
//! starts a *keeper*: a tiny process cloned with `CLONE_VM | CLONE_FILES`, sharing the
//! worker's memory and its descriptor table, that only sleeps. The table outlives the worker
//! in the keeper, adding no reference to any connection while the worker lives (it is the
//! same table: a connection the worker closes is closed).
//!
//! The worker notes in a [`ConnTable`] shared with the master which of its connections are
//! idle between requests (as the hand-off watcher's own table: movable, nothing buffered).
//! When the master reaps the worker it takes those descriptors out of the keeper with
//! `pidfd_getfd`, passes them through the hand-off channel to the other workers, and kills
//! the keeper. The master is a child subreaper, so the keeper becomes its child when the
//! worker dies; a keeper left alone (the master gone too) ends itself within seconds.
//!
//! Nothing of this is on the request path but an atomic store per connection state change.

use std::num::NonZeroUsize;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use nix::sys::mman::{mmap_anonymous, MapFlags, ProtFlags};

use super::conn_table::ConnTable;
use super::handoff::Channel;

/// How long a keeper whose worker died waits for the master before ending itself.
const ORPHAN_SECONDS: u32 = 5;
/// The keeper's stack (it calls a few system calls and sleeps).
const KEEPER_STACK_BYTES: usize = 64 * 1024;

/// The keeper's life: sleep while its worker lives; once the worker is gone (it is then
/// the master's child), wait a few seconds for the master to take what it needs and kill
/// it, else end by itself. Only raw system calls: it shares the worker's memory and runs
/// on a stack of its own, with every signal blocked.
extern "C" fn keeper_main(_arg: *mut nix::libc::c_void) -> nix::libc::c_int {
    // SAFETY: prctl, getppid and nanosleep touch nothing of the shared memory but their
    // arguments.
    unsafe {
        // `ps` and `top` tell it from its worker (their command line is the same memory).
        nix::libc::prctl(nix::libc::PR_SET_NAME, c"rgunicorn-keep".as_ptr(), 0, 0, 0);
        let worker = nix::libc::getppid();
        let second = nix::libc::timespec {
            tv_sec: 1,
            tv_nsec: 0,
        };
        loop {
            nix::libc::nanosleep(&second, std::ptr::null_mut());
            if nix::libc::getppid() != worker {
                break;
            }
        }
        for _ in 0..ORPHAN_SECONDS {
            nix::libc::nanosleep(&second, std::ptr::null_mut());
        }
    }
    0
}

/// Starts this worker's keeper and records it in `table`. A failure (a sandbox refusing
/// `clone`) only means a crash loses the idle connections, as without a keeper.
pub fn start(table: &ConnTable) {
    use nix::sys::signal::{SigSet, SigmaskHow};
    // Valgrind ends a program that clones anything but a thread or a fork ("Valgrind does
    // not support general clone()"): under it (its preload is in LD_PRELOAD), no keeper.
    if std::env::var_os("LD_PRELOAD").is_some_and(|p| p.to_string_lossy().contains("vgpreload")) {
        tracing::debug!("no keeper for this worker under valgrind");
        return;
    }
    let Some(stack_len) = NonZeroUsize::new(KEEPER_STACK_BYTES) else {
        return;
    };
    // SAFETY: a private anonymous mapping, used only as the keeper's stack and never freed
    // (the keeper may outlive everything else of the worker).
    let stack = match unsafe {
        mmap_anonymous(
            None,
            stack_len,
            ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
            MapFlags::MAP_PRIVATE | MapFlags::MAP_STACK,
        )
    } {
        Ok(stack) => stack,
        Err(e) => {
            tracing::debug!("no keeper for this worker: {e}");
            return;
        }
    };
    // The keeper starts with every signal blocked (it must never run a handler of ours).
    let mut previous = SigSet::empty();
    let _ = nix::sys::signal::pthread_sigmask(
        SigmaskHow::SIG_SETMASK,
        Some(&SigSet::all()),
        Some(&mut previous),
    );
    let flags = nix::libc::CLONE_VM | nix::libc::CLONE_FILES | nix::libc::SIGCHLD;
    // SAFETY: the stack grows down from the end of a live mapping of KEEPER_STACK_BYTES;
    // `keeper_main` makes only raw system calls and never returns into our frames.
    let pid = unsafe {
        let top = stack.as_ptr().cast::<u8>().add(KEEPER_STACK_BYTES);
        nix::libc::clone(keeper_main, top.cast(), flags, std::ptr::null_mut())
    };
    let _ = nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&previous), None);
    if pid > 0 {
        table.set_keeper(pid);
    } else {
        tracing::debug!("no keeper for this worker: {}", nix::errno::Errno::last());
    }
}

/// The master, after reaping a worker: its idle connections, taken from its keeper, go to
/// the other workers through `channel`; then the keeper is killed. Returns how many moved.
pub fn rescue(table: &ConnTable, channel: &Channel) -> usize {
    let Some(keeper) = table.keeper() else {
        return 0;
    };
    let mut moved = 0;
    // SAFETY: pidfd_open takes a pid and flags; the result is checked.
    let pidfd = unsafe { nix::libc::syscall(nix::libc::SYS_pidfd_open, keeper, 0) };
    if let Ok(pidfd) = RawFd::try_from(pidfd) {
        if pidfd >= 0 {
            // SAFETY: pidfd_open just returned this descriptor; we own it.
            let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
            moved = pass_on(table, &pidfd, channel);
        }
    }
    end(table);
    moved
}

/// Kills the keeper of a worker that is gone, passing nothing on (the server is stopping).
pub fn end(table: &ConnTable) {
    if let Some(keeper) = table.keeper() {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(keeper),
            nix::sys::signal::Signal::SIGKILL,
        );
        table.set_keeper(0);
    }
}

fn pass_on(table: &ConnTable, pidfd: &OwnedFd, channel: &Channel) -> usize {
    use std::os::fd::AsRawFd;
    let mut moved = 0;
    for (fd, listener, fresh) in table.take_idle() {
        // SAFETY: pidfd_getfd copies descriptor `fd` of the keeper into our table.
        let ours =
            unsafe { nix::libc::syscall(nix::libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0) };
        let Ok(ours) = RawFd::try_from(ours) else {
            continue;
        };
        if ours < 0 {
            continue;
        }
        // SAFETY: pidfd_getfd just made this descriptor; we own it.
        let ours = unsafe { OwnedFd::from_raw_fd(ours) };
        if channel.send(ours.as_raw_fd(), listener, fresh, &[]).is_ok() {
            moved += 1;
        }
    }
    moved
}
