//! The gthread worker's threads: `--threads N` Python threads that run requests the event
//! loop hands them.
//!
//! The loop keeps every socket: accepting, reading heads, keep-alive, slow readers. When a
//! head is complete it passes a [`Job`] (the connection's transport, its buffered bytes, its
//! environment and the parsed head) and marks the connection `InApp`; a thread runs the app
//! and writes the response through the same transport, then returns a [`Done`] and wakes
//! the loop through a pipe. Ownership is the rule that makes this safe without the GIL: while
//! a connection is in a thread, the loop does not touch it.
//!
//! The loop runs without the GIL (see `EventLoop::run`), so the few things that need it are
//! done by the threads, which hold it anyway: a connection that served a request is closed
//! by the next thread to take work ([`Pool::bury`]), after its `gunicorn.socket` let go of
//! the descriptor. Threads go from one request to the next without parking while there is
//! work, and the loop wakes a thread only when one is parked.

use std::collections::VecDeque;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
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
struct Queue {
    jobs: VecDeque<Job>,
    buried: Vec<Buried>,
    /// Threads waiting for work: only then does new work need a wake-up (a system call).
    parked: usize,
    stopping: bool,
}

/// What a thread takes at once: connections to close, and a request.
struct Work {
    job: Option<Job>,
    buried: Vec<Buried>,
}

/// What the loop and the threads share.
struct Shared {
    queue: Mutex<Queue>,
    job_ready: Condvar,
    done: Mutex<Vec<Done>>,
    /// One byte per finished request wakes the loop (it polls the read end).
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
            queue: Mutex::new(Queue {
                jobs: VecDeque::new(),
                buried: Vec::new(),
                parked: 0,
                stopping: false,
            }),
            job_ready: Condvar::new(),
            done: Mutex::new(Vec::new()),
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
    /// The next work, waiting (GIL released by the caller) until there is some; None when
    /// the pool stops.
    fn next_work(&self) -> Option<Work> {
        let mut queue = lock(&self.queue);
        loop {
            if let Some(work) = queue.take() {
                return Some(work);
            }
            if queue.stopping {
                return None;
            }
            queue.parked += 1;
            queue = self
                .job_ready
                .wait(queue)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            queue.parked -= 1;
        }
    }

    /// Work waiting now, without waiting for it.
    fn try_next_work(&self) -> Option<Work> {
        lock(&self.queue).take()
    }

    /// Adds work with `add`, waking a thread only if one is parked.
    fn push(&self, add: impl FnOnce(&mut Queue)) {
        let mut queue = lock(&self.queue);
        add(&mut queue);
        let wake = queue.parked > 0;
        drop(queue);
        if wake {
            self.job_ready.notify_one();
        }
    }

    fn finish(&self, done: Done) {
        let first = {
            let mut finished = lock(&self.done);
            finished.push(done);
            finished.len() == 1
        };
        // One wake-up per batch: the loop takes the whole list when it wakes. (Non-blocking:
        // a full pipe already means "look at the finished list".)
        if first {
            let _ = nix::unistd::write(self.done_write.as_fd(), &[0u8]);
        }
    }
}

/// The threads, from the loop's side.
pub struct Pool {
    shared: Arc<Shared>,
    done_read: OwnedFd,
    threads: usize,
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

    /// Closes a connection that served a request: the next thread to take work lets its
    /// `gunicorn.socket` go and closes the descriptor (the loop, without the GIL, cannot).
    /// Until then the descriptor stays open, so its number cannot be reused.
    pub fn bury(&self, buried: Buried) {
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

    /// The requests finished since the last call.
    pub fn take_done(&self) -> Vec<Done> {
        let mut sink = [0u8; 256];
        while nix::unistd::read(&self.done_read, &mut sink).is_ok_and(|n| n > 0) {}
        std::mem::take(&mut *lock(&self.shared.done))
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
        // Under load the next job is taken at once, keeping the GIL (no switch per request);
        // only an idle thread lets go of it to wait.
        while let Some(work) = shared.try_next_work().or_else(|| {
            let (work, taken_at) = py.detach(|| {
                let work = shared.next_work();
                (work, crate::log::meters::enabled().then(Instant::now))
            });
            if let Some(at) = taken_at {
                crate::log::meters::gil_waited(at.elapsed());
            }
            work
        }) {
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
                io,
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
            shared.finish(Done { idx, outcome, buf });
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
        }
    }

    fn done(idx: usize) -> Done {
        Done {
            idx,
            outcome: Outcome::KeepAlive,
            buf: vec![u8::try_from(idx).unwrap()],
        }
    }

    fn wake_bytes(pool: &Pool) -> usize {
        let mut sink = [0u8; 16];
        nix::unistd::read(&pool.done_read, &mut sink).unwrap_or(0)
    }

    #[test]
    fn finished_requests_wake_the_loop_once_per_batch_and_come_back_in_order() {
        let pool = pool(2);
        assert!(pool.take_done().is_empty());
        pool.shared.finish(done(3));
        pool.shared.finish(done(5));
        assert_eq!(wake_bytes(&pool), 1, "one wake-up for the batch");
        pool.shared.finish(done(7));
        let back: Vec<(usize, Vec<u8>)> = pool
            .take_done()
            .into_iter()
            .map(|d| (d.idx, d.buf))
            .collect();
        assert_eq!(back, vec![(3, vec![3]), (5, vec![5]), (7, vec![7])]);
        assert_eq!(wake_bytes(&pool), 0, "taken with the batch");
        pool.shared.finish(done(1));
        assert_eq!(wake_bytes(&pool), 1, "the next batch wakes it again");
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
        assert!(shared.try_next_work().is_none());
        assert!(pool.take_queued().is_empty());
        drop(pool);
        assert!(shared.next_work().is_none(), "stopping, nothing queued");
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
