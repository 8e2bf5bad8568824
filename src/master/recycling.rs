//! Recycling, as the master's loop steps: `recycle_workers` marks the workers over
//! `--workers-max-rss` or past `--workers-lifetime` (their successors are forked by
//! `manage_workers`), and `retire_recycled` asks them to go once the successors serve.
//! (Methods of [`Master`], kept apart from its loop; the decisions are in `workers` and
//! `recycle`.)

use std::time::Duration;

use tracing::{debug, info};

use super::recycle::{self, Cause};
use super::Master;
use crate::unix::clock::monotonic_ms;

impl Master {
    /// Marks for recycling the workers whose memory stayed over `--workers-max-rss` (sampled
    /// every `--rss-sample-interval`) or whose `--workers-lifetime` ran out. They stop
    /// counting, so `manage_workers` forks their successors now; `retire_recycled` asks
    /// them to go once the successors serve.
    pub(super) fn recycle_workers(&mut self) {
        let now = monotonic_ms();
        if let Some(limit) = self.config.workers_max_rss {
            let heartbeat = self.heartbeat;
            if now >= self.next_rss_sample {
                // Every interval on the clock, not an interval after each late wake-up.
                let interval = self.config.rss_sample_interval_ms;
                self.next_rss_sample = (self.next_rss_sample + interval).max(now + interval / 2);
                let over = self
                    .workers
                    .sample_rss(limit, self.config.rss_samples, |pid, slot| {
                        // A worker still booting is not judged yet (its successor
                        // would be forked before it ever served).
                        heartbeat.is_serving(slot).then(|| recycle::read_rss(pid))?
                    });
                for (pid, rss) in over {
                    info!(
                        "Worker (pid:{pid}) exceeded --workers-max-rss ({} MiB > {} MiB); recycling",
                        rss.div_ceil(1 << 20),
                        limit >> 20
                    );
                    self.count_recycle(Cause::MaxRss);
                }
            }
        }
        for (pid, age_ms) in self.workers.expired(now) {
            info!(
                "Worker (pid:{pid}) reached --workers-lifetime ({} s); recycling",
                age_ms / 1000
            );
            self.count_recycle(Cause::Lifetime);
        }
    }

    /// How long the loop may sleep: a second, or less when the workers' memory is due for
    /// a sample sooner.
    pub(super) fn loop_timeout(&self) -> Duration {
        let second = Duration::from_secs(1);
        if self.config.workers_max_rss.is_none() {
            return second;
        }
        let due = self.next_rss_sample.saturating_sub(monotonic_ms());
        second.min(Duration::from_millis(due))
    }

    /// Asks the workers being recycled to retire (as `--max-requests` retires one: it
    /// finishes its requests and hands its idle connections over), once the pool is whole
    /// and every counted worker, their successors included, accepts.
    pub(super) fn retire_recycled(&mut self) {
        let heartbeat = self.heartbeat;
        let ready = self
            .workers
            .ready_to_retire(self.num_workers, |slot| heartbeat.is_serving(slot));
        for (pid, slot) in ready {
            debug!("Asking worker (pid:{pid}) to retire");
            heartbeat.ask_to_retire(slot);
        }
    }

    pub(super) fn count_recycle(&mut self, cause: Cause) {
        self.recycled.count(cause);
        crate::log::statsd::recycled(cause.name());
    }
}
