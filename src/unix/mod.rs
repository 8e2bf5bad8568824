//! What belongs to the operating-system process rather than to serving, shared by the
//! start-up, the master and the workers: the user and group to run as and the privilege
//! drop ([`identity`]), the pid file, the process title, systemd's notifications, the
//! monotonic clock processes compare, and the shared memory they write to.

pub mod clock;
pub mod identity;
pub mod pidfile;
pub mod proctitle;
pub mod systemd;

/// An anonymous shared mapping of `count` zeroed `T`s, shared with every process forked
/// afterwards, and never unmapped unless its owner does so (pages not touched cost no
/// memory: `MAP_NORESERVE`).
///
/// # Errors
/// `count` is 0, or `mmap` failed.
pub fn shared_zeroed<T>(count: usize) -> nix::Result<std::ptr::NonNull<T>> {
    use nix::sys::mman::{mmap_anonymous, MapFlags, ProtFlags};
    let bytes = count
        .checked_mul(std::mem::size_of::<T>())
        .and_then(std::num::NonZeroUsize::new)
        .ok_or(nix::Error::EINVAL)?;
    // SAFETY: an anonymous mapping of fresh zeroed memory; nothing else aliases it.
    let ptr = unsafe {
        mmap_anonymous(
            None,
            bytes,
            ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
            MapFlags::MAP_SHARED | MapFlags::MAP_NORESERVE,
        )?
    };
    Ok(ptr.cast())
}

/// An OS error as Python's `str(OSError)` shows it (`[Errno 98] Address already in use`),
/// for messages that must read as Gunicorn's.
pub fn os_error(e: nix::Error) -> String {
    format!("[Errno {}] {}", e as i32, e.desc())
}
