//! Recycling on memory and age, rgunicorn's own settings taken from Granian:
//! `--workers-max-rss` (the master samples each worker's resident memory every
//! `--rss-sample-interval` and acts after `--rss-samples` samples over in a row) and
//! `--workers-lifetime` (each worker's own, with jitter). What a recycle is, how one
//! sample counts, and the tally of recycles by cause (`--max-requests` included) that
//! `show stats` reports. The table's decisions are in `workers`; the loop's steps in
//! `mod.rs`.

/// Why a worker was recycled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cause {
    /// It served `--max-requests` (decided by the worker itself).
    MaxRequests,
    /// Its resident memory stayed over `--workers-max-rss`.
    MaxRss,
    /// It reached its `--workers-lifetime`.
    Lifetime,
}

impl Cause {
    /// The name `show stats` and StatsD give it.
    pub fn name(self) -> &'static str {
        match self {
            Cause::MaxRequests => "max_requests",
            Cause::MaxRss => "max_rss",
            Cause::Lifetime => "lifetime",
        }
    }
}

/// Recycles so far, by cause.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Recycled {
    pub max_requests: u64,
    pub max_rss: u64,
    pub lifetime: u64,
}

impl Recycled {
    pub fn count(&mut self, cause: Cause) {
        let n = match cause {
            Cause::MaxRequests => &mut self.max_requests,
            Cause::MaxRss => &mut self.max_rss,
            Cause::Lifetime => &mut self.lifetime,
        };
        *n += 1;
    }
}

/// Where a worker the master recycles is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recycling {
    /// No longer counted, so its successor is forked; it still accepts until the
    /// successor serves.
    Waiting,
    /// Asked to retire (its flag raised): it finishes its requests, hands its idle
    /// connections over, and leaves.
    Asked,
}

/// One memory sample of a worker: `over` is how many samples in a row were over `limit`
/// before this one, updated; true when that run reaches `samples`. A sample that could
/// not be read (the worker just exited) ends the run.
pub fn sample(over: &mut u32, rss: Option<u64>, limit: u64, samples: u32) -> bool {
    match rss {
        Some(rss) if rss > limit => {
            *over = over.saturating_add(1);
            *over >= samples.max(1)
        }
        _ => {
            *over = 0;
            false
        }
    }
}

/// The largest jitter added to `--workers-lifetime`, as a fraction: each worker lives
/// `lifetime + random(0..=lifetime / 10)`, so workers started together do not all
/// restart together.
pub const LIFETIME_JITTER_DIVISOR: u64 = 10;

/// Resident memory in bytes from the text of `/proc/<pid>/statm` (its second field, in
/// pages).
pub fn statm_rss(statm: &str, page_size: u64) -> Option<u64> {
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    pages.checked_mul(page_size)
}

/// The resident memory of process `pid`, in bytes; None if it cannot be read (gone).
/// A worker's keeper shares its memory: only the worker itself is measured.
pub fn read_rss(pid: nix::unistd::Pid) -> Option<u64> {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let page_size = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .and_then(|p| u64::try_from(p).ok())
        .unwrap_or(4096);
    statm_rss(&statm, page_size)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_is_recycled_after_the_samples_in_a_row_over_the_limit() {
        let mut over = 0;
        // --rss-samples 3: over, over, under resets; then three in a row.
        let runs: Vec<bool> = [130, 130, 100, 130, 130, 130]
            .iter()
            .map(|&mib| sample(&mut over, Some(mib << 20), 120 << 20, 3))
            .collect();
        assert_eq!(runs, [false, false, false, false, false, true]);
        // Exactly at the limit is not over; an unreadable sample ends the run.
        let mut over = 0;
        assert!(!sample(&mut over, Some(120 << 20), 120 << 20, 1));
        assert!(sample(&mut over, Some((120 << 20) + 1), 120 << 20, 1));
        assert!(!sample(&mut over, None, 120 << 20, 1));
        assert_eq!(over, 0);
        // --rss-samples 1 (Granian's default) acts on the first sample over.
        let mut over = 0;
        assert!(sample(&mut over, Some(200 << 20), 120 << 20, 1));
    }

    #[test]
    fn statm_gives_resident_pages_times_the_page_size() {
        assert_eq!(
            statm_rss("10962 3017 1791 1 0 1422 0\n", 4096),
            Some(3017 * 4096)
        );
        assert_eq!(statm_rss("10962", 4096), None);
        assert_eq!(statm_rss("", 4096), None);
        assert_eq!(statm_rss("1 x 2", 4096), None);
        let own = read_rss(nix::unistd::getpid()).unwrap();
        assert!(
            own > 1 << 20,
            "this test process has more than 1 MiB resident: {own}"
        );
    }

    #[test]
    fn recycles_are_counted_by_cause() {
        let mut tally = Recycled::default();
        tally.count(Cause::MaxRss);
        tally.count(Cause::MaxRss);
        tally.count(Cause::Lifetime);
        assert_eq!(
            tally,
            Recycled {
                max_requests: 0,
                max_rss: 2,
                lifetime: 1
            }
        );
        assert_eq!(Cause::MaxRequests.name(), "max_requests");
    }
}
