//! The gthread worker's threads: `--threads N` Python threads that run requests the event
//! loop hands them.
//!
//! The loop keeps every socket: accepting, reading heads, keep-alive, slow readers. When a
//! head is complete it passes a [`Job`] (the connection's transport, its buffered bytes, its
//! environment and the parsed head) and marks the connection `InApp`; a thread runs the app
//! and writes the response through the same transport, then returns a [`Done`] (waking the
//! loop through a pipe when it must, below). Ownership is the rule that makes this safe without the GIL: while
//! a connection is in a thread, the loop does not touch it.
//!
//! The loop runs without the GIL (see `EventLoop::run`), so the few things that need it are
//! done by the threads, which hold it anyway: a connection that served a request is closed
//! by the next thread to take work ([`Pool::bury`]), after its `gunicorn.socket` let go of
//! the descriptor. Threads go from one request to the next without parking while there is
//! work. Wake-ups, each a system call and a context switch, are kept for when they matter:
//! - A parked thread is woken only when no other is already on its way to the queue (a
//!   woken thread waits for the GIL before it takes a job, so that a thread running
//!   requests back to back keeps taking them); a thread that takes a job while more wait
//!   wakes the next, so an app that lets go of the GIL (I/O) has them run side by side.
//! - A thread wakes the loop only when it sleeps and the connection needs it now (to close
//!   it, to send what the client has not taken yet, to answer a pipelined request, or the
//!   loop let a readiness event pass while the thread had it; or the worker is stopping);
//!   otherwise the loop takes the finished request on its next turn (the
//!   client's next request is such a turn).
//! - While requests wait for a thread, the loop has no reason to read more at once: it
//!   sleeps on the threads alone ([`Sleep::Saturated`]), letting readiness events gather,
//!   and the thread that leaves the queue low ([`REFILL_AT`]) wakes it to refill it. One
//!   wake-up then brings in a batch of requests instead of one each.

use std::collections::VecDeque;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
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

/// How the loop goes to sleep (see the module's comment).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Sleep {
    /// Not at all: finished requests wait for it.
    No,
    /// Until a socket is ready (or a thread needs it).
    Polling,
    /// Until a thread takes the last waiting request (or needs it), sockets aside.
    Saturated,
}

/// A thread that leaves this many requests waiting, or fewer, wakes a loop sleeping
/// [`Sleep::Saturated`].
const REFILL_AT: usize = 1;

/// [`Shared::loop_state`]: the loop is awake and looks at the finished list before it
/// sleeps; or how it sleeps.
const LOOP_AWAKE: u8 = 0;
const LOOP_POLLING: u8 = 1;
const LOOP_SATURATED: u8 = 2;

/// What the loop and the threads share.
struct Shared {
    queue: Mutex<Queue>,
    job_ready: Condvar,
    done: Mutex<Vec<Done>>,
    /// `done` has requests for the loop (read without the lock, each turn).
    any_done: AtomicBool,
    /// Whether and how the loop sleeps (`LOOP_*`); a thread that wakes it sets it awake.
    loop_state: AtomicU8,
    /// A byte wakes the loop (it polls the read end; see [`Shared::wake_loop`]).
    done_write: OwnedFd,
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
        let (done_read, done_write) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_NONBLOCK | nix::fcntl::OFlag::O_CLOEXEC)?;
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::default()),
            job_ready: Condvar::new(),
            done: Mutex::new(Vec::new()),
            any_done: AtomicBool::new(false),
            loop_state: AtomicU8::new(LOOP_AWAKE),
            done_write,
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
    /// [`Shared::park`]. Taking a job while more wait wakes one more thread, unless one is
    /// on its way.
    fn try_next_work(&self, woken: bool) -> Option<Work> {
        let mut queue = lock(&self.queue);
        if woken {
            queue.waking -= 1;
        }
        let work = queue.take();
        let took_job = work.as_ref().is_some_and(|w| w.job.is_some());
        let left = queue.jobs.len();
        let wake = took_job && left > 0 && queue.should_wake();
        drop(queue);
        if wake {
            self.job_ready.notify_one();
        }
        if took_job && left <= REFILL_AT {
            // The queue runs low: the loop refills it while this job (and the one left)
            // run, so that the thread does not find it empty and park.
            self.wake_loop(|state| state == LOOP_SATURATED);
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

    /// Adds work with `add`, waking a parked thread unless one is on its way.
    fn push(&self, add: impl FnOnce(&mut Queue)) {
        let mut queue = lock(&self.queue);
        add(&mut queue);
        let wake = queue.should_wake();
        drop(queue);
        if wake {
            self.job_ready.notify_one();
        }
    }

    /// Gives a finished request back to the loop. `io` is its connection: the loop is
    /// woken when the connection needs it now (see the module's comment).
    fn finish(&self, mut done: Done, io: &Transport) {
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
            self.wake_loop(|state| state != LOOP_AWAKE);
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
    pub fn submit(&self, job: Job) {
        self.shared.push(|q| q.jobs.push_back(job));
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
        self.shared.push(|q| q.buried.push(buried));
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
        let saturated = lock(&shared.queue).jobs.len() > REFILL_AT;
        let state = if saturated {
            LOOP_SATURATED
        } else {
            LOOP_POLLING
        };
        shared.loop_state.store(state, Ordering::SeqCst);
        if shared.any_done.load(Ordering::SeqCst) {
            shared.loop_state.store(LOOP_AWAKE, Ordering::SeqCst);
            return Sleep::No;
        }
        if saturated && lock(&shared.queue).jobs.len() <= REFILL_AT {
            // Ran low meanwhile, maybe without a wake-up (the state was not set yet).
            shared.loop_state.store(LOOP_POLLING, Ordering::SeqCst);
            return Sleep::Polling;
        }
        if saturated {
            Sleep::Saturated
        } else {
            Sleep::Polling
        }
    }

    /// The loop woke up.
    pub fn woke_up(&self) {
        self.shared.loop_state.store(LOOP_AWAKE, Ordering::SeqCst);
    }

    /// Sleeps as [`Sleep::Saturated`]: until the wake-up pipe, or `signals` (the worker's
    /// signal pipe), is readable, at most `limit`.
    pub fn wait_saturated(&self, signals: RawFd, limit: std::time::Duration) {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        // SAFETY: both pipes stay open for the worker's life.
        let (done, signals) = unsafe {
            (
                std::os::fd::BorrowedFd::borrow_raw(self.done_read.as_raw_fd()),
                std::os::fd::BorrowedFd::borrow_raw(signals),
            )
        };
        let mut fds = [
            PollFd::new(done, PollFlags::POLLIN),
            PollFd::new(signals, PollFlags::POLLIN),
        ];
        let ms = u16::try_from(limit.as_millis()).unwrap_or(u16::MAX);
        let _ = poll(&mut fds, PollTimeout::from(ms));
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
            shared.finish(done, &io);
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

    #[test]
    fn with_requests_waiting_the_loop_sleeps_until_the_last_is_taken() {
        let pool = pool(2);
        pool.submit(job(1));
        assert_eq!(
            pool.going_to_sleep(),
            Sleep::Polling,
            "one request is not many"
        );
        pool.woke_up();
        pool.submit(job(2));
        pool.submit(job(3));
        assert_eq!(pool.going_to_sleep(), Sleep::Saturated);
        assert_eq!(taken_jobs(pool.shared.try_next_work(false)), Some(1));
        assert_eq!(wake_bytes(&pool), 0, "two still wait");
        assert_eq!(taken_jobs(pool.shared.try_next_work(false)), Some(2));
        assert_eq!(wake_bytes(&pool), 1, "the queue runs low: refill it");
        pool.woke_up();
        assert_eq!(pool.going_to_sleep(), Sleep::Polling);
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
