//! Which of a worker's connections are idle between requests, one word each in memory
//! shared with others: the hand-off watcher's table (`handoff`) and the table the master
//! reads to rescue a dead worker's connections from its keeper (`keeper`).

use std::os::fd::RawFd;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};

use nix::sys::mman::munmap;

const IDLE: u64 = 1 << 63;
const FRESH: u64 = 1 << 62;

/// An idle connection (descriptor, listener, no request yet) as one word, 0 for none: the
/// hand-off watcher's table and a worker's [`ConnTable`] hold these.
pub fn encode_idle(idle: Option<(RawFd, usize, bool)>) -> u64 {
    match idle {
        Some((fd, listener, fresh)) if fd >= 0 && listener < 1 << 16 => {
            let fresh = if fresh { FRESH } else { 0 };
            IDLE | fresh | (listener as u64) << 32 | u64::from(fd.unsigned_abs())
        }
        _ => 0,
    }
}

/// The connection [`encode_idle`] stored, if any.
pub fn decode_idle(word: u64) -> Option<(RawFd, usize, bool)> {
    (word & IDLE != 0).then_some((
        (word & 0xffff_ffff) as RawFd,
        ((word >> 32) & 0xffff) as usize,
        word & FRESH != 0,
    ))
}

/// One worker's table, shared by the worker and the master: word 0 is the keeper's pid,
/// then one word per connection slot (0, or an idle connection as the watcher encodes it).
/// A copyable handle: the master unmaps it once the worker is reaped ([`ConnTable::unmap`]).
#[derive(Clone, Copy, Debug)]
pub struct ConnTable {
    words: NonNull<AtomicU64>,
    len: usize,
}

// SAFETY: the table is only accessed through atomics.
unsafe impl Send for ConnTable {}
// SAFETY: as above.
unsafe impl Sync for ConnTable {}

impl ConnTable {
    /// Maps a table for `slots` connections, shared with processes forked afterwards.
    ///
    /// # Errors
    /// `mmap` failed.
    pub fn new(slots: usize) -> nix::Result<ConnTable> {
        let len = slots + 1;
        Ok(ConnTable {
            words: crate::unix::shared_zeroed::<AtomicU64>(len)?,
            len,
        })
    }

    fn word(&self, i: usize) -> Option<&AtomicU64> {
        // SAFETY: `i` is within the mapping, which lives as long as `self`, and AtomicU64
        // has the layout of the zero-initialised u64 cells.
        (i < self.len).then(|| unsafe { &*self.words.as_ptr().add(i) })
    }

    /// Records whether connection slot `idx` is idle (its descriptor, listener, freshness).
    pub fn set_idle(&self, idx: usize, idle: Option<(RawFd, usize, bool)>) {
        if let Some(cell) = self.word(idx + 1) {
            cell.store(encode_idle(idle), Ordering::Release);
        }
    }

    /// Empties the table of idle connections, yielding each (descriptor, listener, fresh):
    /// the master, taking a dead worker's connections from its keeper.
    pub fn take_idle(&self) -> impl Iterator<Item = (RawFd, usize, bool)> + '_ {
        (1..self.len).filter_map(|i| decode_idle(self.word(i)?.swap(0, Ordering::AcqRel)))
    }

    pub fn set_keeper(&self, pid: i32) {
        if let Some(cell) = self.word(0) {
            cell.store(u64::from(pid.unsigned_abs()), Ordering::Release);
        }
    }

    pub fn keeper(&self) -> Option<i32> {
        let pid = self.word(0)?.load(Ordering::Acquire);
        i32::try_from(pid).ok().filter(|&p| p > 0)
    }
}

impl ConnTable {
    /// Unmaps the table (the master, once its worker is reaped and rescued).
    pub fn unmap(self) {
        // SAFETY: the mapping was made by `new` with this length; its worker is gone and the
        // master keeps no other handle to it.
        let _ = unsafe {
            munmap(
                self.words.cast(),
                self.len * std::mem::size_of::<AtomicU64>(),
            )
        };
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn idle_slots_round_trip_and_the_keeper_word_is_apart() {
        let table = ConnTable::new(4).unwrap();
        table.set_idle(3, Some((17, 2, false)));
        table.set_idle(0, Some((9, 0, true)));
        table.set_idle(4, Some((1, 0, true))); // past the end: ignored
        assert_eq!(table.keeper(), None);
        table.set_keeper(1234);
        assert_eq!(table.keeper(), Some(1234));
        let words: Vec<_> = (1..table.len)
            .map(|i| decode_idle(table.word(i).unwrap().load(Ordering::Relaxed)))
            .collect();
        assert_eq!(
            words,
            vec![Some((9, 0, true)), None, None, Some((17, 2, false))]
        );
        table.set_idle(3, None);
        assert_eq!(
            decode_idle(table.word(4).unwrap().load(Ordering::Relaxed)),
            None
        );
        assert_eq!(table.take_idle().collect::<Vec<_>>(), vec![(9, 0, true)]);
        assert_eq!(table.take_idle().count(), 0, "taken once");
        table.unmap();
    }
}
