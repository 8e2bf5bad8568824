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

/// Forks the process. Must be called on the main thread, attached to the interpreter, with no
/// other thread of ours running (a lock held by another thread would stay locked in the child).
///
/// # Errors
/// `fork(2)` failed (no child was created).
pub fn fork(_py: Python<'_>) -> nix::Result<Forked> {
    // SAFETY: we hold the GIL (the `Python` token proves it), as PyOS_BeforeFork requires.
    unsafe { ffi::PyOS_BeforeFork() };
    // SAFETY: the master is single-threaded at this point (no logging or runtime threads), so
    // the child cannot inherit a lock held by a thread that does not exist in it.
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
