//! Forking with a live interpreter, exactly as `os.fork()` does it.
//!
//! The full trio `PyOS_BeforeFork` / `fork` / `PyOS_AfterFork_{Parent,Child}` is required:
//! it takes and releases the import lock and the GIL-related state so the child starts with
//! consistent interpreter locks (partial sequences crashed or deadlocked uWSGI).

use nix::unistd::{ForkResult, Pid};
use pyo3::ffi;
use pyo3::Python;

/// Which side of the fork we are on.
pub enum Forked {
    Parent(Pid),
    Child,
}

/// Forks the process, on the main thread, attached to the interpreter.
///
/// The master is not always single-threaded: a configuration file or a preloaded app may
/// start Python threads. What makes the fork safe is this invariant: every lock of ours
/// that a Python thread can take (the error-log sink, the hook table) is taken only with
/// the GIL held and released before the GIL is, and the fork happens with the GIL held
/// (PyOS_BeforeFork also takes the interpreter's own locks). So no other thread can be
/// inside such a critical section at the moment of the fork, and the child's copies of
/// those locks are free. (The master starts no Rust threads; the workers' hand-off
/// watcher thread exists only in workers, which do not fork.)
///
/// # Errors
/// `fork(2)` failed (no child was created).
pub fn fork(_py: Python<'_>) -> nix::Result<Forked> {
    // SAFETY: we hold the GIL (the `Python` token proves it), as PyOS_BeforeFork requires.
    unsafe { ffi::PyOS_BeforeFork() };
    // SAFETY: see the invariant above: no lock of ours is held by another thread while we
    // hold the GIL, so the child inherits none locked.
    match unsafe { nix::unistd::fork() } {
        Ok(ForkResult::Parent { child }) => {
            // SAFETY: pairs with PyOS_BeforeFork in the parent.
            unsafe { ffi::PyOS_AfterFork_Parent() };
            Ok(Forked::Parent(child))
        }
        Ok(ForkResult::Child) => {
            // SAFETY: pairs with PyOS_BeforeFork in the child; resets the interpreter's locks
            // and thread state for the one thread the child has.
            unsafe { ffi::PyOS_AfterFork_Child() };
            Ok(Forked::Child)
        }
        Err(e) => {
            // SAFETY: no child was created; undo BeforeFork in the only process there is.
            unsafe { ffi::PyOS_AfterFork_Parent() };
            Err(e)
        }
    }
}
