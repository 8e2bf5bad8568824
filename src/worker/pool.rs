//! The gthread worker's threads: `--threads N` Python threads that run the event loop in
//! turns and the requests it hands them.
//!
//! The loop keeps every socket: accepting, reading heads, keep-alive, slow readers. When a
//! head is complete it queues a [`Job`] (the connection's transport, its buffered bytes,
//! its environment and the parsed head) and marks the connection `InApp`; a thread runs the
//! app and writes the response through the same transport, then returns a [`Done`].
//! Ownership is the rule that makes this safe: while a connection is in a thread, the
//! loop does not touch it.
//!
//! The loop is not a thread of its own: the main thread lends it ([`Lent`]) and whichever
//! thread has no request runs its next turn ([`Shared::lead`]), as in a leader/follower
//! server. So under load one thread reads a batch of requests, runs them, and reads the
//! next batch, as a sync worker does, keeping the GIL throughout: no switch and no
//! wake-up per request (with a loop thread beside the threads, two threads per process
//! ran at once, each request crossed between them, and on a machine whose cores every
//! worker keeps busy that cost 1.3 to 1.6 times a sync worker's CPU per response).
//! Wake-ups, each a system call and a context switch, are kept for when they matter:
//! - A thread that takes a job wakes one more, unless one is on its way, if more jobs
//!   wait or no thread polls. The woken one waits for the GIL, so it goes on only when
//!   the first lets go of it (an app doing I/O, or Python's switch interval): then it
//!   takes the next job, or the loop. An app that waits on I/O thus has its requests run
//!   side by side, and a CPU-bound one runs on one thread.
//! - A thread with nothing to do sleeps in the loop's poll: up to 1 ms keeping the GIL if
//!   no thread is inside a request (under load the next request comes within it, and the
//!   thread on its way is not handed a GIL only to find nothing and park), then without
//!   it. A thread that finds the loop taken parks.
//! - A finished request goes back to the loop without a wake-up, unless the connection
//!   needs it now (to close it, to send what the client has not taken yet, to answer a
//!   pipelined request, or the loop let a readiness event pass while the thread had it;
//!   or the worker is stopping): then the thread takes a turn itself, or wakes the thread
//!   sleeping in the poll.
//! - The main thread keeps the signals, and while threads are inside requests it takes a
//!   turn every few milliseconds if no thread has the loop, so that what the loop answers
//!   itself (static files, accepts, deadlines, the heartbeat) does not wait for the app.
//!
//! The turns that need the GIL take it; a connection that served a request is closed by
//! the next thread to take work ([`Pool::bury`]), after its `gunicorn.socket` let go of
//! the descriptor.

use std::collections::VecDeque;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Instant;

use pyo3::prelude::*;

use crate::config::Config;
use crate::http::request::RequestHead;
use crate::log::access::AccessLog;
use crate::transport::Transport;
use crate::wsgi::environ::ConnEnv;
use crate::wsgi::{Exchange, Outcome, Runtime};

/// A request for a thread: everything it needs, owned.
pub struct Job {
    /// The connection's slot in the loop.
    pub idx: usize,
    pub io: Transport,
    /// The head's bytes, then the body, maybe a pipelined request (see `Exchange`).
    pub buf: Vec<u8>,
    pub env: Arc<ConnEnv>,
    pub head: RequestHead,
    pub may_keep_alive: bool,
}

/// A finished request, back to the loop.
pub struct Done {
    pub idx: usize,
    pub outcome: Outcome,
    /// The connection's bytes not consumed by the request.
    pub buf: Vec<u8>,
    /// The loop let a readiness event of the connection pass while the thread had it:
    /// read it again (see `Transport::note_ready_while_away`).
    pub read_again: bool,
}

/// A closed connection whose `gunicorn.socket` must let go of the descriptor (which needs
/// the GIL) before the descriptor is closed.
pub struct Buried {
    pub env: Arc<ConnEnv>,
    pub io: Transport,
}

impl Buried {
    fn release(self, py: Python<'_>) {
        self.env.release(py);
        self.io.close();
    }
}

/// Work waiting for a thread.
#[derive(Default)]
struct Queue {
    jobs: VecDeque<Job>,
    buried: Vec<Buried>,
    /// Threads waiting for work.
    parked: usize,
    /// Wake-ups sent that no parked thread has taken yet.
    wakeups: usize,
    /// Threads woken that have not looked at the queue yet (they wait for the GIL first).
    waking: usize,
    stopping: bool,
}

/// What a thread takes at once: connections to close, and a request.
struct Work {
    job: Option<Job>,
    buried: Vec<Buried>,
}

/// How the loop goes to sleep.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Sleep {
    /// Not at all: finished requests wait for it.
    No,
    /// Until a socket is ready (or a thread needs it).
    Polling,
}

/// [`Shared::loop_state`]: no thread sleeps in the loop's poll (one may be running a turn,
/// and looks at the finished list before it sleeps); or one does.
const LOOP_AWAKE: u8 = 0;
const LOOP_POLLING: u8 = 1;

/// [`Shared::exit`] before any turn said the worker must leave.
const NO_EXIT: i64 = i64::MIN;

/// How long a turn of the loop may sleep in its poll.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Wait {
    /// Not at all.
    No,
    /// At most [`BRIEFLY`].
    Briefly,
    /// Until something happens (or a deadline of the loop's own).
    Long,
}

/// A turn that keeps the GIL sleeps at most this long (see [`Shared::lead`]).
pub const BRIEFLY: std::time::Duration = std::time::Duration::from_millis(1);

/// The event loop as the threads see it: whoever holds it runs its next turn.
pub trait Turns: Send {
    /// One turn. Some(status) when the worker must leave (see `EventLoop::turn`).
    fn turn(&mut self, wait: Wait) -> Option<i32>;
}

/// What the loop and the threads share.
struct Shared {
    queue: Mutex<Queue>,
    job_ready: Condvar,
    done: Mutex<Vec<Done>>,
    /// `done` has requests for the loop (read without the lock, each turn).
    any_done: AtomicBool,
    /// Whether a thread sleeps in the loop's poll (`LOOP_*`); a thread that wakes it sets
    /// it awake.
    loop_state: AtomicU8,
    /// A byte wakes a thread sleeping in the loop's poll (it polls the read end; see
    /// [`Shared::wake_loop`]).
    done_write: OwnedFd,
    /// The loop, lent by the main thread (None before and after). Threads holding the GIL
    /// only ever `try_lock` it; the main thread, which may wait for it, does so without
    /// the GIL; a holder may take the GIL. So the two locks cannot deadlock.
    the_loop: Mutex<Option<Box<dyn Turns>>>,
    /// The main thread waits for the loop: threads do not start a turn that sleeps.
    main_wants: AtomicBool,
    /// A thread found the loop taken when it needed a turn: the holder, once it lets go,
    /// sends one to look again (see [`Shared::hand_over`]).
    wanted: AtomicBool,
    /// The status a turn said the worker leaves with ([`NO_EXIT`] until then).
    exit: AtomicI64,
    /// A byte wakes the main thread (it polls the read end beside the signal pipe).
    main_read: OwnedFd,
    main_write: OwnedFd,
    /// The main thread sleeps long (nothing was in a thread): a thread taking a job while
    /// none polls wakes it, to look after the loop (see `EventLoop::serve_threaded`).
    main_napping: AtomicBool,
    /// Quit and abort statuses from signals, for the next turn (see `EventLoop::leave_threaded`).
    leaves: Mutex<Vec<i32>>,
    any_leave: AtomicBool,
    /// Bumped by USR1: each thread reopens its access log before its next request.
    reopen: AtomicU64,
    /// Per thread: when its current request started (nanoseconds after `epoch`, plus one),
    /// or 0 while it waits for one. The watchdog's view of progress.
    started: Vec<AtomicU64>,
    epoch: std::time::Instant,
}

impl Shared {
    /// The state for `threads` threads, and the read end of the wake-up pipe.
    fn new(threads: usize) -> std::io::Result<(Arc<Shared>, OwnedFd)> {
        let flags = nix::fcntl::OFlag::O_NONBLOCK | nix::fcntl::OFlag::O_CLOEXEC;
        let (done_read, done_write) = nix::unistd::pipe2(flags)?;
        let (main_read, main_write) = nix::unistd::pipe2(flags)?;
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::default()),
            job_ready: Condvar::new(),
            done: Mutex::new(Vec::new()),
            any_done: AtomicBool::new(false),
            loop_state: AtomicU8::new(LOOP_AWAKE),
            done_write,
            the_loop: Mutex::new(None),
            main_wants: AtomicBool::new(false),
            wanted: AtomicBool::new(false),
            exit: AtomicI64::new(NO_EXIT),
            main_read,
            main_write,
            main_napping: AtomicBool::new(false),
            leaves: Mutex::new(Vec::new()),
            any_leave: AtomicBool::new(false),
            reopen: AtomicU64::new(0),
            started: (0..threads).map(|_| AtomicU64::new(0)).collect(),
            epoch: Instant::now(),
        });
        Ok((shared, done_read))
    }

    fn mark(&self, thread: usize, busy: bool) {
        let value = if busy {
            u64::try_from(self.epoch.elapsed().as_nanos())
                .unwrap_or(u64::MAX - 1)
                .saturating_add(1)
        } else {
            0
        };
        if let Some(slot) = self.started.get(thread) {
            slot.store(value, Ordering::Relaxed);
        }
    }
}

/// Locks, taking over a lock a panicking thread left (the data stays consistent: every
/// critical section here is a push or a pop).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Queue {
    /// Whether new work should wake a parked thread: none is on its way already.
    fn should_wake(&mut self) -> bool {
        let wake = self.parked > self.wakeups && self.wakeups + self.waking == 0;
        if wake {
            self.wakeups += 1;
        }
        wake
    }

    fn take(&mut self) -> Option<Work> {
        let job = self.jobs.pop_front();
        if job.is_none() && self.buried.is_empty() {
            return None;
        }
        Some(Work {
            job,
            buried: std::mem::take(&mut self.buried),
        })
    }
}

impl Shared {
    /// Waits (GIL released by the caller) until there may be work: true to go and look
    /// (the thread is then counted as on its way, until [`Shared::try_next_work`]), false
    /// when the pool stops.
    fn park(&self) -> bool {
        let mut queue = lock(&self.queue);
        loop {
            if queue.wakeups > 0 {
                queue.wakeups -= 1;
                queue.waking += 1;
                return true;
            }
            if !queue.jobs.is_empty() || !queue.buried.is_empty() {
                queue.waking += 1;
                return true;
            }
            if queue.stopping {
                return false;
            }
            queue.parked += 1;
            queue = self
                .job_ready
                .wait(queue)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            queue.parked -= 1;
        }
    }

    /// Work waiting now, without waiting for it; `woken`: the caller comes from
    /// [`Shared::park`]. A thread that takes a job wakes one more, unless one is on its
    /// way, if more jobs wait or no thread polls: the woken one waits for the GIL, and
    /// takes over (a job, or the loop) when this one lets go of it, as an app does
    /// around I/O. Under a CPU-bound load it waits, and this one runs request after
    /// request without a switch.
    fn try_next_work(&self, woken: bool) -> Option<Work> {
        let mut queue = lock(&self.queue);
        if woken {
            queue.waking -= 1;
        }
        let work = queue.take();
        let took_job = work.as_ref().is_some_and(|w| w.job.is_some());
        let unattended = self.loop_state.load(Ordering::SeqCst) != LOOP_POLLING;
        let wake = took_job && (!queue.jobs.is_empty() || unattended) && queue.should_wake();
        drop(queue);
        if wake {
            self.job_ready.notify_one();
        }
        if took_job
            && unattended
            && self.main_napping.load(Ordering::Relaxed)
            && self.main_napping.swap(false, Ordering::SeqCst)
        {
            let _ = nix::unistd::write(self.main_write.as_fd(), &[0u8]);
        }
        work
    }

    /// Wakes the loop if it sleeps as `asleep` accepts (only one thread writes the byte).
    fn wake_loop(&self, asleep: impl Fn(u8) -> bool) {
        let state = self.loop_state.load(Ordering::SeqCst);
        if asleep(state)
            && self
                .loop_state
                .compare_exchange(state, LOOP_AWAKE, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
        {
            // Non-blocking: a full pipe already means "wake up".
            let _ = nix::unistd::write(self.done_write.as_fd(), &[0u8]);
        }
    }

    /// Gives a finished request back to the loop. `io` is its connection. True when the
    /// connection needs the loop now (see the module's comment): a thread sleeping in the
    /// loop's poll is woken; otherwise the caller takes a turn (see [`Shared::lead`]).
    fn finish(&self, mut done: Done, io: &Transport) -> bool {
        // Only the loop sends what the client has not taken yet; a stopping worker counts
        // its requests to know when to leave.
        let urgent = !matches!(done.outcome, Outcome::KeepAlive)
            || !done.buf.is_empty()
            || io.has_pending_output()
            || !super::signals::is_alive();
        let mut finished = lock(&self.done);
        // Published before the connection's flag and the loop's state are read; the loop
        // sets those before it reads this (see `Pool::going_to_sleep`): one of the two
        // sides sees the other.
        self.any_done.store(true, Ordering::SeqCst);
        done.read_again = io.take_ready_while_away();
        let wake = urgent || done.read_again;
        finished.push(done);
        drop(finished);
        if wake {
            self.wake_loop(|state| state == LOOP_POLLING);
        }
        wake
    }

    /// Takes a turn of the loop if no other thread has it (true if it did). First
    /// without sleeping, keeping the GIL: under load there is work at once. If that made
    /// no work for the threads, and `may_sleep`, a turn that sleeps in the poll follows,
    /// without the GIL, so that another thread may run the app meanwhile.
    fn lead(&self, py: Python<'_>, may_sleep: bool) -> bool {
        if self.main_wants.load(Ordering::SeqCst) || self.exit.load(Ordering::SeqCst) != NO_EXIT {
            return false;
        }
        match self.turn_once(self.lock_or_flag(), Wait::No) {
            None => return false,
            Some(true) => return true,
            Some(false) => {}
        }
        if !may_sleep || !self.may_sleep() {
            self.hand_over();
            return true;
        }
        // While no thread is inside a request, none needs the GIL: a short sleep keeping
        // it (under load the next request comes within it) spares handing the GIL to the
        // thread on its way (see `try_next_work`), which would find nothing and park.
        if !self.busy() {
            if self.turn_once(self.lock_or_flag(), Wait::Briefly) != Some(false) {
                return true;
            }
            if !self.may_sleep() {
                self.hand_over();
                return true;
            }
        }
        // The turn that sleeps serves whoever wanted one meanwhile (it does not sleep
        // while a finished request waits).
        self.wanted.store(false, Ordering::SeqCst);
        py.detach(|| {
            if self.turn_once(self.lock_or_flag(), Wait::Long).is_some() {
                self.hand_over();
            }
        });
        true
    }

    /// Runs one turn with `the_loop` if this thread got it and it is lent: None if not;
    /// else whether the turn said the worker leaves (the main thread is then told).
    fn turn_once(
        &self,
        the_loop: Option<MutexGuard<'_, Option<Box<dyn Turns>>>>,
        wait: Wait,
    ) -> Option<bool> {
        let mut the_loop = the_loop?;
        let code = the_loop.as_mut()?.turn(wait);
        drop(the_loop);
        if let Some(code) = code {
            self.leave_with(code);
        }
        Some(code.is_some())
    }

    /// The loop, unless another thread has it: then that thread is told (`wanted`) that
    /// this one needed it, and looks at that once it lets go (see [`Shared::hand_over`]).
    fn lock_or_flag(&self) -> Option<MutexGuard<'_, Option<Box<dyn Turns>>>> {
        if let Some(the_loop) = self.try_lock_loop() {
            return Some(the_loop);
        }
        self.wanted.store(true, Ordering::SeqCst);
        // It may have let go before it could see the flag.
        self.try_lock_loop()
    }

    fn try_lock_loop(&self) -> Option<MutexGuard<'_, Option<Box<dyn Turns>>>> {
        match self.the_loop.try_lock() {
            Ok(guard) => Some(guard),
            Err(std::sync::TryLockError::Poisoned(e)) => Some(e.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => None,
        }
    }

    /// After letting go of the loop: a thread that found it taken meanwhile (and parked,
    /// or is about to) is sent to look again (it takes a turn, or the work it wanted done).
    fn hand_over(&self) {
        if self.wanted.swap(false, Ordering::SeqCst) {
            self.wake_surely();
        }
    }

    /// Wakes a parked thread, or has the next thread to park go on at once: someone must
    /// look at the loop now.
    fn wake_surely(&self) {
        let mut queue = lock(&self.queue);
        if queue.wakeups == 0 {
            queue.wakeups = 1;
        }
        drop(queue);
        self.job_ready.notify_one();
    }

    /// Whether the loop may sleep: nothing for the threads, and the main thread does not
    /// wait for it.
    fn may_sleep(&self) -> bool {
        self.nothing_to_do() && !self.main_wants.load(Ordering::SeqCst)
    }

    /// Some thread is inside a request.
    fn busy(&self) -> bool {
        self.started.iter().any(|s| s.load(Ordering::Relaxed) != 0)
    }

    /// Nothing for the threads: no job, nothing to close, no finished request.
    fn nothing_to_do(&self) -> bool {
        let queue = lock(&self.queue);
        queue.jobs.is_empty() && queue.buried.is_empty() && !self.any_done.load(Ordering::SeqCst)
    }

    /// A turn said the worker leaves with `code`: the main thread is told.
    fn leave_with(&self, code: i32) {
        let _ = self.exit.compare_exchange(
            NO_EXIT,
            i64::from(code),
            Ordering::SeqCst,
            Ordering::SeqCst,
        );
        let _ = nix::unistd::write(self.main_write.as_fd(), &[0u8]);
    }

    /// Wakes a parked thread if none is on its way (it takes work, or the loop).
    fn wake_one(&self) {
        let wake = lock(&self.queue).should_wake();
        if wake {
            self.job_ready.notify_one();
        }
    }
}

/// `/dev/null`, for [`Pool::bury`]; without it a buried socket stays connected until a
/// thread closes it.
fn open_devnull() -> Option<OwnedFd> {
    nix::fcntl::open(
        "/dev/null",
        nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .ok()
}

/// The threads, from the loop's side.
pub struct Pool {
    shared: Arc<Shared>,
    done_read: OwnedFd,
    threads: usize,
    /// Takes the number of a buried connection's socket (see [`Pool::bury`]).
    devnull: Option<OwnedFd>,
}

impl Pool {
    /// Starts `config.threads` threads, each with its own [`Runtime`] (environ template,
    /// access log sink) over the same app.
    ///
    /// # Errors
    /// A thread's Runtime (a Python error, as a sync worker's would be), the wake-up pipe
    /// or a thread could not be created.
    pub fn start(
        py: Python<'_>,
        config: &Config,
        app: &Py<PyAny>,
        access_logs: Vec<Option<AccessLog>>,
    ) -> PyResult<Pool> {
        let (shared, done_read) = Shared::new(config.threads)?;
        let worker = crate::python::hooks::worker_object(py).map(Bound::unbind);
        let mut access_logs = access_logs.into_iter();
        for n in 0..config.threads {
            let shared = Arc::clone(&shared);
            // Made here, so a failure stops the worker's boot instead of leaving a pool
            // with fewer threads than it counts.
            let runtime =
                Runtime::new(py, app.clone_ref(py), config, access_logs.next().flatten())?;
            let worker = worker.as_ref().map(|w| w.clone_ref(py));
            std::thread::Builder::new()
                .name(format!("rgunicorn-{n}"))
                .spawn(move || serve(&shared, n, runtime, worker))?;
        }
        Ok(Pool {
            shared,
            done_read,
            threads: config.threads,
            devnull: open_devnull(),
        })
    }

    /// How many requests can run at once.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// The descriptor the loop polls for finished requests.
    pub fn done_fd(&self) -> RawFd {
        self.done_read.as_raw_fd()
    }

    /// Queues a request for the next free thread.
    ///
    /// No thread is woken here: the thread running the turn takes a job itself after it,
    /// and wakes another if more wait (see [`Shared::try_next_work`]); after a turn of
    /// the main thread's, [`Lent::try_turn`] does.
    pub fn submit(&self, job: Job) {
        lock(&self.shared.queue).jobs.push_back(job);
    }

    /// Closes a connection that served a request. The socket goes at once (the client
    /// sees the close now): `/dev/null` takes its descriptor's number. A thread, when one
    /// is free, lets the connection's `gunicorn.socket` go (the loop, without the GIL,
    /// cannot) and then closes the number; until then it cannot be reused, so an object the
    /// app kept cannot reach a later connection.
    pub fn bury(&self, buried: Buried) {
        if let Some(null) = &self.devnull {
            // SAFETY: `raw_fd` is the connection's socket, still owned by `buried.io` and
            // used by no thread (the loop closed the connection; no thread has it); dup2
            // replaces it atomically.
            unsafe { nix::libc::dup2(null.as_raw_fd(), buried.io.raw_fd()) };
        }
        // Closed by the next thread to take work (none is woken for it: see `submit`).
        lock(&self.shared.queue).buried.push(buried);
    }

    /// Closes what is buried now, in the caller's thread (the worker is leaving).
    pub fn release_buried(&self, py: Python<'_>) {
        let buried = std::mem::take(&mut lock(&self.shared.queue).buried);
        for b in buried {
            b.release(py);
        }
    }

    /// Takes back the requests no thread has started yet (the worker is leaving: they can
    /// go to a sibling instead of waiting for a thread that may never be free).
    pub fn take_queued(&self) -> Vec<Job> {
        lock(&self.shared.queue).jobs.drain(..).collect()
    }

    /// Empties the wake-up pipe (the loop polled it readable).
    pub fn drain_wakeups(&self) {
        let mut sink = [0u8; 256];
        // A short read emptied it: no second read to see EAGAIN.
        while nix::unistd::read(&self.done_read, &mut sink).is_ok_and(|n| n == sink.len()) {}
    }

    /// The quit and abort statuses signals brought since the last call (see [`Lent::leave`]).
    pub fn take_leaves(&self) -> Vec<i32> {
        if !self.shared.any_leave.swap(false, Ordering::SeqCst) {
            return Vec::new();
        }
        std::mem::take(&mut *lock(&self.shared.leaves))
    }

    /// Whether finished requests wait for the loop.
    pub fn has_done(&self) -> bool {
        self.shared.any_done.load(Ordering::SeqCst)
    }

    /// Moves the requests finished since the last call into `into` (empty), which then
    /// serves as the threads' list: no allocation per batch.
    pub fn take_done(&self, into: &mut Vec<Done>) {
        if !self.has_done() {
            return;
        }
        let mut finished = lock(&self.shared.done);
        self.shared.any_done.store(false, Ordering::SeqCst);
        std::mem::swap(&mut *finished, into);
    }

    /// The loop is about to sleep: how (see [`Sleep`]). It says so first, then looks at
    /// what threads publish; a thread publishes first, then looks at what the loop said.
    pub fn going_to_sleep(&self) -> Sleep {
        let shared = &self.shared;
        shared.loop_state.store(LOOP_POLLING, Ordering::SeqCst);
        if shared.any_done.load(Ordering::SeqCst) || shared.main_wants.load(Ordering::SeqCst) {
            shared.loop_state.store(LOOP_AWAKE, Ordering::SeqCst);
            return Sleep::No;
        }
        Sleep::Polling
    }

    /// The loop woke up.
    pub fn woke_up(&self) {
        self.shared.loop_state.store(LOOP_AWAKE, Ordering::SeqCst);
    }

    /// The main thread's side of the loop (see [`Lent`]).
    pub fn lender(&self) -> Lent {
        Lent {
            shared: Arc::clone(&self.shared),
        }
    }

    /// How long since the last sign of progress when every thread is inside a request: the
    /// time since the most recent of them started (requests still queued do not count).
    /// None while a thread is free, which is progress now.
    pub fn busy_for(&self) -> Option<std::time::Duration> {
        let mut latest = 0;
        for slot in &self.shared.started {
            match slot.load(Ordering::Relaxed) {
                0 => return None,
                started => latest = latest.max(started - 1),
            }
        }
        let now = u64::try_from(self.shared.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
        Some(std::time::Duration::from_nanos(now.saturating_sub(latest)))
    }

    /// Requests waiting for a free thread.
    pub fn queued(&self) -> usize {
        lock(&self.shared.queue).jobs.len()
    }

    /// USR1: every thread reopens its access log before its next request.
    pub fn reopen_logs(&self) {
        self.shared.reopen.fetch_add(1, Ordering::Relaxed);
    }
}

/// What woke the main thread (see [`Lent::wait`]).
#[derive(Default, Clone, Copy, Debug)]
pub struct Woken {
    /// A signal came.
    pub signal: bool,
    /// A thread wrote to it.
    pub thread: bool,
}

/// The loop lent to the threads, from the main thread's side (see
/// `EventLoop::serve_threaded`).
pub struct Lent {
    shared: Arc<Shared>,
}

impl Lent {
    /// Lends the loop, and wakes a thread to run it.
    pub fn lend(&self, the_loop: Box<dyn Turns>) {
        *lock(&self.shared.the_loop) = Some(the_loop);
        self.shared.wake_surely();
    }

    /// Takes the loop back (the worker leaves), waiting for the thread that has it.
    pub fn take_back(&self) -> Option<Box<dyn Turns>> {
        self.with_loop(Option::take)
    }

    /// Runs `f` on the loop, waiting for the thread that has it (woken if it sleeps in the
    /// poll). The caller must not hold the GIL (see [`Shared::the_loop`]).
    pub fn with_loop<T>(&self, f: impl FnOnce(&mut Option<Box<dyn Turns>>) -> T) -> T {
        let shared = &self.shared;
        shared.main_wants.store(true, Ordering::SeqCst);
        // Unconditionally: a thread about to sleep in the poll finds the byte there.
        let _ = nix::unistd::write(shared.done_write.as_fd(), &[0u8]);
        let mut the_loop = lock(&shared.the_loop);
        shared.main_wants.store(false, Ordering::SeqCst);
        let result = f(&mut the_loop);
        drop(the_loop);
        shared.hand_over();
        result
    }

    /// Takes a turn (without sleeping) if no thread has the loop; then wakes a parked
    /// thread if work waits or none polls.
    pub fn try_turn(&self) {
        let shared = &self.shared;
        if shared.exit.load(Ordering::SeqCst) != NO_EXIT {
            return;
        }
        if shared.turn_once(shared.try_lock_loop(), Wait::No).is_none() {
            return;
        }
        shared.hand_over();
        // Work this turn made, or no thread polls while some are parked: one takes over.
        if shared.loop_state.load(Ordering::SeqCst) != LOOP_POLLING || !shared.nothing_to_do() {
            shared.wake_one();
        }
    }

    /// Wakes a thread sleeping in the loop's poll, to act on what a signal set.
    pub fn wake_loop(&self) {
        // Unconditionally: a thread about to sleep in the poll, past the flags, finds the
        // byte there.
        let _ = nix::unistd::write(self.shared.done_write.as_fd(), &[0u8]);
    }

    /// A quit or abort (`code`): the next turn, in whichever thread, starts leaving (see
    /// `EventLoop::leave_threaded`). The main thread does not wait for the loop for it: a
    /// thread may have it in a write to a slow client.
    pub fn leave(&self, code: i32) {
        lock(&self.shared.leaves).push(code);
        self.shared.any_leave.store(true, Ordering::SeqCst);
        self.wake_loop();
    }

    /// The status a turn said the worker leaves with.
    pub fn exit(&self) -> Option<i32> {
        let code = self.shared.exit.load(Ordering::SeqCst);
        (code != NO_EXIT).then(|| i32::try_from(code).unwrap_or(1))
    }

    /// Some thread is inside a request: the loop may go untended (every thread may be),
    /// so the main thread looks after it.
    pub fn busy(&self) -> bool {
        self.shared.busy()
    }

    /// Sleeps until `signals` (the worker's signal pipe) is readable, a thread wakes it (a
    /// turn says the worker leaves, or a thread took a request while none polls), or `nap`
    /// passes. Says which.
    pub fn wait(&self, signals: RawFd, nap: std::time::Duration) -> Woken {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        // SAFETY: the signal pipe stays open for the worker's life.
        let signals = unsafe { std::os::fd::BorrowedFd::borrow_raw(signals) };
        let mut fds = [
            PollFd::new(signals, PollFlags::POLLIN),
            PollFd::new(self.shared.main_read.as_fd(), PollFlags::POLLIN),
        ];
        let ms = u16::try_from(nap.as_millis()).unwrap_or(u16::MAX);
        let long = nap > std::time::Duration::from_millis(100);
        self.shared.main_napping.store(long, Ordering::SeqCst);
        let polled = poll(&mut fds, PollTimeout::from(ms));
        self.shared.main_napping.store(false, Ordering::SeqCst);
        if polled.is_err() {
            return Woken::default();
        }
        let woken = Woken {
            signal: fds[0].revents().is_some_and(|r| !r.is_empty()),
            thread: fds[1].revents().is_some_and(|r| !r.is_empty()),
        };
        let mut sink = [0u8; 64];
        while nix::unistd::read(&self.shared.main_read, &mut sink).is_ok_and(|n| n > 0) {}
        woken
    }
}

impl Drop for Pool {
    /// Idle threads leave; one still inside the app ends with the process.
    fn drop(&mut self) {
        lock(&self.shared.queue).stopping = true;
        self.shared.job_ready.notify_all();
    }
}

/// A thread's life: take a job, run it through the app, give the connection back.
fn serve(shared: &Shared, thread: usize, mut runtime: Runtime, worker: Option<Py<PyAny>>) {
    // Signals are the main thread's: Python runs its handlers there, and the loop's
    // wake-up pipe is polled there.
    let _ = nix::sys::signal::SigSet::all().thread_block();
    Python::attach(|py| {
        if let Some(worker) = worker {
            // Hooks (pre_request, post_request) find the worker object per thread.
            crate::python::hooks::set_worker_object(worker);
        }
        let mut reopened = 0;
        let mut woken = false;
        loop {
            // Under load the next job is taken at once, keeping the GIL (no switch per
            // request); only an idle thread lets go of it, to wait.
            let Some(work) = shared.try_next_work(std::mem::take(&mut woken)) else {
                // No request: run the loop, unless another thread does.
                if shared.lead(py, true) {
                    continue;
                }
                let (go, woke_at) = py.detach(|| {
                    let go = shared.park();
                    (go, crate::log::meters::enabled().then(Instant::now))
                });
                if let Some(at) = woke_at {
                    crate::log::meters::gil_waited(at.elapsed());
                }
                if !go {
                    break;
                }
                woken = true;
                continue;
            };
            for buried in work.buried {
                buried.release(py);
            }
            let Some(job) = work.job else {
                continue;
            };
            let generation = shared.reopen.load(Ordering::Relaxed);
            if generation != reopened {
                runtime.reopen_logs();
                reopened = generation;
            }
            let Job {
                idx,
                io,
                mut buf,
                env,
                head,
                may_keep_alive,
            } = job;
            let mut exchange = Exchange {
                io: io.clone(),
                buf: &mut buf,
                head_len: head.head_len,
                conn: &env,
                may_keep_alive,
            };
            shared.mark(thread, true);
            crate::log::meters::busy(true);
            let outcome = runtime.handle(py, &mut exchange, &head, Instant::now());
            crate::log::meters::busy(false);
            drop(exchange);
            shared.mark(thread, false);
            // Our share of the environment goes before the loop gets the connection back.
            drop(env);
            let done = Done {
                idx,
                outcome,
                buf,
                read_again: false,
            };
            if shared.finish(done, &io) {
                shared.lead(py, false);
            }
        }
    });
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// A pool without threads: the loop's side only.
    fn pool(threads: usize) -> Pool {
        let (shared, done_read) = Shared::new(threads).unwrap();
        Pool {
            shared,
            done_read,
            threads,
            devnull: open_devnull(),
        }
    }

    /// A request finished keeping its connection open, with `buf` left over.
    fn done(idx: usize, buf: &[u8]) -> Done {
        Done {
            idx,
            outcome: Outcome::KeepAlive,
            buf: buf.to_vec(),
            read_again: false,
        }
    }

    fn wake_bytes(pool: &Pool) -> usize {
        let mut sink = [0u8; 16];
        nix::unistd::read(&pool.done_read, &mut sink).unwrap_or(0)
    }

    fn taken(pool: &Pool) -> Vec<(usize, bool)> {
        let mut done = Vec::new();
        pool.take_done(&mut done);
        done.into_iter().map(|d| (d.idx, d.read_again)).collect()
    }

    fn job(idx: usize) -> Job {
        let (io, _client) = crate::transport::testing::pair();
        let raw = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        let Ok(Some(head)) =
            crate::http::request::parse_head(raw, &crate::http::request::Limits::default())
        else {
            panic!("a request head");
        };
        Job {
            idx,
            env: Arc::new(ConnEnv::for_tests(io.raw_fd())),
            io,
            buf: raw.to_vec(),
            head,
            may_keep_alive: true,
        }
    }

    fn taken_jobs(work: Option<Work>) -> Option<usize> {
        work.and_then(|w| w.job).map(|j| j.idx)
    }

    #[test]
    fn a_kept_alive_connection_comes_back_without_waking_the_loop() {
        let pool = pool(2);
        let (io, _client) = crate::transport::testing::pair();
        assert!(!pool.has_done() && taken(&pool).is_empty());
        assert_eq!(pool.going_to_sleep(), Sleep::Polling);
        pool.shared.finish(done(3, b""), &io);
        pool.shared.finish(done(5, b""), &io);
        assert_eq!(wake_bytes(&pool), 0, "its next request wakes the loop");
        assert!(pool.has_done(), "taken on the loop's next turn");
        assert_eq!(
            pool.going_to_sleep(),
            Sleep::No,
            "it looks before it sleeps"
        );
        assert_eq!(taken(&pool), vec![(3, false), (5, false)]);
        assert!(!pool.has_done());
    }

    #[test]
    fn a_connection_that_needs_the_loop_now_wakes_it_if_it_sleeps() {
        let pool = pool(2);
        let (io, _client) = crate::transport::testing::pair();
        // Awake, the loop looks at the list before it sleeps: no wake-up.
        let mut closing = done(1, b"");
        closing.outcome = Outcome::Close;
        pool.shared.finish(closing, &io);
        assert_eq!(wake_bytes(&pool), 0);
        assert_eq!(taken(&pool), vec![(1, false)]);
        assert_eq!(pool.going_to_sleep(), Sleep::Polling);
        // A pipelined request waits in its buffer: one wake-up for the batch.
        pool.shared.finish(done(2, b"GET"), &io);
        io.note_ready_while_away();
        pool.shared.finish(done(4, b""), &io);
        assert_eq!(wake_bytes(&pool), 1, "one wake-up for the batch");
        pool.woke_up();
        assert_eq!(taken(&pool), vec![(2, false), (4, true)]);
        assert!(!io.take_ready_while_away(), "taken by the thread");
        // The loop let an event pass while the thread had the connection.
        assert_eq!(pool.going_to_sleep(), Sleep::Polling);
        io.note_ready_while_away();
        pool.shared.finish(done(6, b""), &io);
        assert_eq!(wake_bytes(&pool), 1, "the next batch wakes it again");
    }

    /// A loop that records its turns (whether each could sleep), queues `jobs` requests on
    /// its first, and says the worker leaves on turn `exit_on`.
    struct FakeLoop {
        shared: Arc<Shared>,
        turns: Arc<Mutex<Vec<Wait>>>,
        jobs: Vec<Job>,
        exit_on: Option<usize>,
    }

    impl Turns for FakeLoop {
        fn turn(&mut self, wait: Wait) -> Option<i32> {
            let mut turns = lock(&self.turns);
            turns.push(wait);
            lock(&self.shared.queue).jobs.extend(self.jobs.drain(..));
            (Some(turns.len()) == self.exit_on).then_some(3)
        }
    }

    fn lend(pool: &Pool, jobs: Vec<Job>, exit_on: Option<usize>) -> Arc<Mutex<Vec<Wait>>> {
        let turns = Arc::new(Mutex::new(Vec::new()));
        pool.lender().lend(Box::new(FakeLoop {
            shared: Arc::clone(&pool.shared),
            turns: Arc::clone(&turns),
            jobs,
            exit_on,
        }));
        turns
    }

    #[test]
    fn a_free_thread_runs_the_loop_and_sleeps_in_it_only_with_nothing_to_do() {
        crate::transport::testing::with_python(|py| {
            let pool = pool(2);
            let shared = &pool.shared;
            assert!(!shared.lead(py, true), "nothing lent yet");
            let turns = lend(&pool, vec![job(1), job(2)], None);
            assert!(shared.lead(py, true));
            assert_eq!(
                *lock(&turns),
                vec![Wait::No],
                "it made work: no sleeping turn, the thread takes a job"
            );
            assert_eq!(taken_jobs(shared.try_next_work(false)), Some(1));
            assert_eq!(taken_jobs(shared.try_next_work(false)), Some(2));
            assert!(shared.lead(py, true));
            assert_eq!(
                *lock(&turns),
                vec![Wait::No, Wait::No, Wait::Briefly, Wait::Long],
                "nothing came at once: a short sleep keeping the GIL (no thread is inside \
                 a request), then a long one without it"
            );
            // With a thread inside a request (which may want the GIL back), no short sleep.
            shared.mark(1, true);
            assert!(shared.lead(py, true));
            assert_eq!(lock(&turns)[4..], [Wait::No, Wait::Long]);
            shared.mark(1, false);
            // A finished request the loop needs now: a turn at once, never a sleeping one.
            assert!(shared.lead(py, false));
            assert_eq!(lock(&turns)[6..], [Wait::No]);
        });
    }

    #[test]
    fn a_thread_finding_the_loop_taken_flags_it_for_its_holder() {
        crate::transport::testing::with_python(|py| {
            let pool = pool(2);
            let turns = lend(&pool, Vec::new(), None);
            let held = lock(&pool.shared.the_loop);
            assert!(!pool.shared.lead(py, true), "taken: the caller parks");
            assert!(pool.shared.wanted.load(Ordering::SeqCst));
            drop(held);
            assert!(pool.shared.lead(py, false));
            assert!(!pool.shared.wanted.load(Ordering::SeqCst));
            assert_eq!(*lock(&turns), vec![Wait::No]);
        });
    }

    #[test]
    fn a_turn_that_says_leave_tells_the_main_thread_and_stops_the_turns() {
        crate::transport::testing::with_python(|py| {
            let pool = pool(2);
            let lender = pool.lender();
            let turns = lend(&pool, Vec::new(), Some(1));
            assert_eq!(lender.exit(), None);
            assert!(pool.shared.lead(py, true));
            assert_eq!(lender.exit(), Some(3));
            let woken = lender.wait(pool.done_fd(), Duration::from_secs(5));
            assert!(
                woken.thread && !woken.signal,
                "woken by the turn, not by a signal"
            );
            assert!(!pool.shared.lead(py, true), "no turn after the last");
            lender.try_turn();
            assert_eq!(lock(&turns).len(), 1);
            assert!(lender.take_back().is_some());
            assert!(lender.take_back().is_none());
        });
    }

    #[test]
    fn the_main_thread_waiting_for_the_loop_keeps_threads_from_it() {
        crate::transport::testing::with_python(|py| {
            let pool = pool(2);
            let turns = lend(&pool, Vec::new(), None);
            pool.shared.main_wants.store(true, Ordering::SeqCst);
            assert!(!pool.shared.lead(py, true));
            assert_eq!(
                pool.going_to_sleep(),
                Sleep::No,
                "a turn under way does not sleep in the poll"
            );
            pool.shared.main_wants.store(false, Ordering::SeqCst);
            pool.lender().with_loop(|lp| assert!(lp.is_some()));
            assert_eq!(wake_bytes(&pool), 1, "a thread in the poll is woken for it");
            assert!(lock(&turns).is_empty());
        });
    }

    #[test]
    fn a_thread_that_found_the_loop_taken_is_sent_to_look_again() {
        crate::transport::testing::with_python(|py| {
            let pool = pool(2);
            let _turns = lend(&pool, Vec::new(), None);
            // `lend` made sure a thread looks: taken as a parked thread would take it.
            assert_eq!(std::mem::take(&mut lock(&pool.shared.queue).wakeups), 1);
            // The main thread's turn has the loop when a thread comes for it; that thread
            // parks (not yet counted as parked: it may not be waiting yet).
            let main_turn = lock(&pool.shared.the_loop);
            assert!(!pool.shared.lead(py, true));
            drop(main_turn);
            pool.shared.hand_over();
            assert_eq!(
                lock(&pool.shared.queue).wakeups,
                1,
                "its park returns at once, and it takes the loop"
            );
        });
    }

    #[test]
    fn a_job_taken_while_none_polls_wakes_a_main_thread_that_naps_long() {
        let pool = pool(2);
        let lender = pool.lender();
        pool.shared.main_napping.store(true, Ordering::SeqCst);
        pool.submit(job(1));
        assert_eq!(taken_jobs(pool.shared.try_next_work(false)), Some(1));
        let woken = lender.wait(pool.done_fd(), Duration::from_secs(5));
        assert!(woken.thread, "woken to look after the loop meanwhile");
        // Napping briefly, it is not woken.
        pool.submit(job(2));
        assert_eq!(taken_jobs(pool.shared.try_next_work(false)), Some(2));
        assert!(!lender.wait(pool.done_fd(), Duration::ZERO).thread);
    }

    #[test]
    fn taking_a_job_while_no_thread_polls_keeps_one_thread_on_its_way() {
        let pool = pool(2);
        lock(&pool.shared.queue).parked = 1;
        pool.submit(job(1));
        assert_eq!(
            lock(&pool.shared.queue).wakeups,
            0,
            "queued without a wake-up"
        );
        assert_eq!(taken_jobs(pool.shared.try_next_work(false)), Some(1));
        assert_eq!(
            lock(&pool.shared.queue).wakeups,
            1,
            "nobody polls: one waits for the GIL, to take over"
        );
        lock(&pool.shared.queue).wakeups = 0;
        pool.submit(job(2));
        assert_eq!(pool.going_to_sleep(), Sleep::Polling);
        assert_eq!(taken_jobs(pool.shared.try_next_work(false)), Some(2));
        assert_eq!(
            lock(&pool.shared.queue).wakeups,
            0,
            "a thread polls and no job waits: nobody is woken"
        );
    }

    #[test]
    fn new_work_wakes_a_parked_thread_only_when_none_is_on_its_way() {
        let mut queue = Queue::default();
        assert!(!queue.should_wake(), "nobody parked");
        queue.parked = 3;
        assert!(queue.should_wake());
        assert_eq!(queue.wakeups, 1);
        assert!(!queue.should_wake(), "one wake-up not yet taken");
        // Taken (see `park`): that thread now waits for the GIL before it looks.
        queue.wakeups = 0;
        queue.waking = 1;
        queue.parked = 2;
        assert!(!queue.should_wake(), "one thread on its way");
        queue.waking = 0;
        assert!(
            queue.should_wake(),
            "it took a job: the next one wakes another"
        );
    }

    #[test]
    fn the_watchdog_sees_progress_while_a_thread_is_free() {
        let pool = pool(2);
        assert_eq!(pool.busy_for(), None);
        pool.shared.mark(0, true);
        assert_eq!(pool.busy_for(), None, "one thread still free");
        pool.shared.mark(1, true);
        assert!(pool.busy_for().is_some(), "all busy");
        pool.shared.mark(0, false);
        assert_eq!(pool.busy_for(), None);
    }

    #[test]
    fn all_threads_busy_count_from_the_latest_request_started() {
        let (mut shared, done_read) = Shared::new(2).unwrap();
        let now = Instant::now();
        Arc::get_mut(&mut shared).unwrap().epoch =
            now.checked_sub(Duration::from_secs(10)).unwrap();
        // Started 1 s and 5 s after the epoch (stored plus one: 0 means waiting).
        shared.started[0].store(1_000_000_001, Ordering::Relaxed);
        shared.started[1].store(5_000_000_001, Ordering::Relaxed);
        let pool = Pool {
            shared,
            done_read,
            threads: 2,
            devnull: None,
        };
        let age = pool.busy_for().unwrap();
        assert!(
            age >= Duration::from_secs(5) && age < Duration::from_secs(9),
            "{age:?}"
        );
    }

    #[test]
    fn idle_threads_leave_when_the_pool_stops() {
        let pool = pool(1);
        let shared = Arc::clone(&pool.shared);
        assert!(shared.try_next_work(false).is_none());
        assert!(pool.take_queued().is_empty());
        drop(pool);
        assert!(!shared.park(), "stopping, nothing queued");
    }

    #[test]
    fn a_lock_a_panicking_thread_left_is_taken_over() {
        let m = Arc::new(Mutex::new(vec![1]));
        let theirs = Arc::clone(&m);
        let panicked = std::thread::spawn(move || {
            let _guard = theirs.lock().unwrap();
            panic!("a thread dies holding the lock");
        })
        .join();
        assert!(panicked.is_err() && m.is_poisoned());
        lock(&m).push(2);
        assert_eq!(*lock(&m), vec![1, 2]);
    }
}
