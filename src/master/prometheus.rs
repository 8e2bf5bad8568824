//! The metrics page (`--metrics`): Prometheus' text format 0.0.4, written from a
//! [`Snapshot`] of the master's own figures and the workers' shared meters.
//!
//! Names follow Prometheus' conventions (`rgunicorn_` prefix, base units, `_total` on
//! counters, HELP and TYPE on every family) and cover what Granian 2.8 exports; the
//! README's "Running a fleet" maps Granian's names to these. Per-worker series carry a
//! `worker` label: the worker's slot, from 1, which a replacement worker takes over with
//! its predecessor's counts (see `log::meters`).

use std::fmt::Write;
use std::sync::atomic::Ordering;

use crate::log::meters::{SlotMeters, DURATION_BOUNDS_US};

/// The media type of the text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Everything one scrape reports.
pub struct Snapshot {
    /// The master's start (seconds since the epoch) and resident memory.
    pub start_time: f64,
    pub master_rss: Option<u64>,
    /// The workers wanted (`--workers`, TTIN/TTOU, `worker add`).
    pub workers_target: usize,
    pub spawned: u64,
    /// Workers replaced, by cause.
    pub respawned: Vec<(&'static str, u64)>,
    pub reloads: u64,
    /// Idle connections of dead workers passed to the others.
    pub rescued: u64,
    /// Each TCP listener: its address, connections waiting to be accepted, the queue's
    /// limit.
    pub listeners: Vec<(String, u32, u32)>,
    /// Every slot a worker has used, in slot order.
    pub slots: Vec<SlotView>,
}

/// One worker slot: its meters, and the worker in it now, if any.
pub struct SlotView {
    pub slot: usize,
    pub meters: &'static SlotMeters,
    pub live: Option<LiveWorker>,
}

/// The worker serving from a slot now.
pub struct LiveWorker {
    pub pid: i32,
    pub age: u64,
    pub uptime_seconds: f64,
    pub rss: Option<u64>,
}

/// The page for `snapshot`.
pub fn render(snapshot: &Snapshot) -> String {
    let mut page = Page::default();
    master_families(&mut page, snapshot);
    worker_families(&mut page, snapshot);
    page.out
}

/// A family of one sample without labels, from the master's own figures.
struct MasterFamily {
    name: &'static str,
    kind: &'static str,
    help: &'static str,
    /// None: not reported this time.
    value: fn(&Snapshot) -> Option<String>,
}

const MASTER_FAMILIES: &[MasterFamily] = &[
    MasterFamily {
        name: "process_start_time_seconds",
        kind: "gauge",
        help: "When the master started, in seconds since the Unix epoch.",
        value: |s| Some(s.start_time.to_string()),
    },
    MasterFamily {
        name: "process_resident_memory_bytes",
        kind: "gauge",
        help: "The master's resident memory.",
        value: |s| s.master_rss.map(|b| b.to_string()),
    },
    MasterFamily {
        name: "rgunicorn_workers",
        kind: "gauge",
        help: "Worker processes alive, those finishing their last requests included.",
        value: |s| {
            Some(
                s.slots
                    .iter()
                    .filter(|v| v.live.is_some())
                    .count()
                    .to_string(),
            )
        },
    },
    MasterFamily {
        name: "rgunicorn_workers_target",
        kind: "gauge",
        help: "Worker processes wanted (--workers, TTIN/TTOU, worker add/remove).",
        value: |s| Some(s.workers_target.to_string()),
    },
    MasterFamily {
        name: "rgunicorn_workers_busy",
        kind: "gauge",
        help: "Workers with at least one thread running the app now.",
        value: |s| {
            let busy = s
                .slots
                .iter()
                .filter(|v| v.live.is_some() && load(&v.meters.busy) > 0);
            Some(busy.count().to_string())
        },
    },
    MasterFamily {
        name: "rgunicorn_workers_spawned_total",
        kind: "counter",
        help: "Worker processes forked.",
        value: |s| Some(s.spawned.to_string()),
    },
    MasterFamily {
        name: "rgunicorn_reloads_total",
        kind: "counter",
        help: "Reloads (HUP, control socket reload).",
        value: |s| Some(s.reloads.to_string()),
    },
    MasterFamily {
        name: "rgunicorn_connections_rescued_total",
        kind: "counter",
        help: "Idle keep-alive connections of workers that died, passed to the others.",
        value: |s| Some(s.rescued.to_string()),
    },
];

fn master_families(page: &mut Page, s: &Snapshot) {
    page.family(
        "rgunicorn_info",
        "gauge",
        "The server's version (always 1).",
    );
    page.sample("rgunicorn_info", &[("version", crate::VERSION)], 1);
    for family in MASTER_FAMILIES {
        if let Some(value) = (family.value)(s) {
            page.family(family.name, family.kind, family.help);
            page.sample(family.name, &[], value);
        }
    }
    page.family(
        "rgunicorn_workers_respawned_total",
        "counter",
        "Workers replaced, by cause: error (crashed or killed), timeout (--timeout), \
         max_requests, max_rss, lifetime.",
    );
    for (cause, n) in &s.respawned {
        page.sample("rgunicorn_workers_respawned_total", &[("cause", cause)], n);
    }
    if s.listeners.is_empty() {
        return;
    }
    page.family(
        "rgunicorn_listener_backlog",
        "gauge",
        "Connections waiting in a TCP listener's accept queue.",
    );
    for (name, waiting, _) in &s.listeners {
        page.sample("rgunicorn_listener_backlog", &[("listener", name)], waiting);
    }
    page.family(
        "rgunicorn_listener_backlog_limit",
        "gauge",
        "How many connections a TCP listener's accept queue holds (--backlog as the kernel \
         capped it).",
    );
    for (name, _, limit) in &s.listeners {
        page.sample(
            "rgunicorn_listener_backlog_limit",
            &[("listener", name)],
            limit,
        );
    }
}

/// A per-worker family whose value comes from the slot's meters.
struct SlotFamily {
    name: &'static str,
    kind: &'static str,
    help: &'static str,
    /// Only for a slot with a live worker (the worker's own figures, not the slot's).
    live_only: bool,
    value: fn(&SlotView) -> Option<String>,
}

const SLOT_FAMILIES: &[SlotFamily] = &[
    SlotFamily {
        name: "rgunicorn_worker_uptime_seconds",
        kind: "gauge",
        help: "How long the worker has been running.",
        live_only: true,
        value: |v| v.live.as_ref().map(|l| l.uptime_seconds.to_string()),
    },
    SlotFamily {
        name: "rgunicorn_worker_resident_memory_bytes",
        kind: "gauge",
        help: "The worker's resident memory, read by the master from /proc.",
        live_only: true,
        value: |v| v.live.as_ref().and_then(|l| l.rss).map(|b| b.to_string()),
    },
    SlotFamily {
        name: "rgunicorn_worker_threads",
        kind: "gauge",
        help: "Requests the worker runs at once (--threads; 1 for the sync worker).",
        live_only: true,
        value: |v| Some(load(&v.meters.threads).to_string()),
    },
    SlotFamily {
        name: "rgunicorn_worker_threads_busy",
        kind: "gauge",
        help: "The worker's threads running the app now.",
        live_only: true,
        value: |v| Some(load(&v.meters.busy).to_string()),
    },
    SlotFamily {
        name: "rgunicorn_worker_queued_requests",
        kind: "gauge",
        help: "Requests read and waiting for a free thread.",
        live_only: true,
        value: |v| Some(load(&v.meters.queued).to_string()),
    },
    SlotFamily {
        name: "rgunicorn_worker_busy_seconds_total",
        kind: "counter",
        help: "Time the worker's threads spent running the app.",
        live_only: false,
        value: |v| Some(seconds(load(&v.meters.duration_sum_us))),
    },
    SlotFamily {
        name: "rgunicorn_worker_gil_wait_seconds_total",
        kind: "counter",
        help: "Time the worker's threads waited to take the GIL back after waiting for work.",
        live_only: false,
        value: |v| Some(seconds(load(&v.meters.gil_wait_us))),
    },
    SlotFamily {
        name: "rgunicorn_connections_accepted_total",
        kind: "counter",
        help: "Connections accepted from the listeners.",
        live_only: false,
        value: |v| Some(load(&v.meters.accepted).to_string()),
    },
    SlotFamily {
        name: "rgunicorn_connections_open",
        kind: "gauge",
        help: "Connections open in the worker (published every second).",
        live_only: true,
        value: |v| Some(load(&v.meters.open).to_string()),
    },
    SlotFamily {
        name: "rgunicorn_connections_keepalive",
        kind: "gauge",
        help: "Keep-alive connections waiting for their next request (published every second).",
        live_only: true,
        value: |v| Some(load(&v.meters.idle).to_string()),
    },
    SlotFamily {
        name: "rgunicorn_connections_handed_off_total",
        kind: "counter",
        help: "Idle keep-alive connections passed to another worker (recycling, shutdown, \
               a busy worker).",
        live_only: false,
        value: |v| Some(load(&v.meters.handed_off).to_string()),
    },
    SlotFamily {
        name: "rgunicorn_connections_adopted_total",
        kind: "counter",
        help: "Connections taken over from another worker.",
        live_only: false,
        value: |v| Some(load(&v.meters.adopted).to_string()),
    },
    SlotFamily {
        name: "rgunicorn_outbox_bytes",
        kind: "gauge",
        help: "Response bytes waiting for slow clients (published every second).",
        live_only: true,
        value: |v| Some(load(&v.meters.outbox_bytes).to_string()),
    },
    SlotFamily {
        name: "rgunicorn_requests_refused_total",
        kind: "counter",
        help: "Requests refused before the app (malformed, over a limit).",
        live_only: false,
        value: |v| Some(load(&v.meters.refused).to_string()),
    },
];

const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

fn worker_families(page: &mut Page, s: &Snapshot) {
    let label = |v: &SlotView| (v.slot + 1).to_string();
    page.family(
        "rgunicorn_worker_info",
        "gauge",
        "The worker in each slot now: its pid and age (spawn order); always 1.",
    );
    for v in &s.slots {
        if let Some(live) = &v.live {
            let (pid, age) = (live.pid.to_string(), live.age.to_string());
            let labels = [("worker", label(v)), ("pid", pid), ("age", age)];
            page.sample_owned("rgunicorn_worker_info", &labels, 1);
        }
    }
    for family in SLOT_FAMILIES {
        page.family(family.name, family.kind, family.help);
        for v in &s.slots {
            if family.live_only && v.live.is_none() {
                continue;
            }
            if let Some(value) = (family.value)(v) {
                page.sample(family.name, &[("worker", &label(v))], value);
            }
        }
    }
    page.family(
        "rgunicorn_requests_total",
        "counter",
        "Responses by status class.",
    );
    for v in &s.slots {
        let worker = label(v);
        for (class, cell) in STATUS_CLASSES.iter().zip(&v.meters.responses) {
            let labels = [("worker", worker.as_str()), ("status", class)];
            page.sample("rgunicorn_requests_total", &labels, load(cell));
        }
    }
    page.family(
        "rgunicorn_request_duration_seconds",
        "histogram",
        "Time from a request's head to the app's last response byte handed to the socket.",
    );
    for v in &s.slots {
        let worker = label(v);
        let mut cumulative = 0;
        for (i, cell) in v.meters.duration.iter().enumerate() {
            cumulative += load(cell);
            let le = DURATION_BOUNDS_US
                .get(i)
                .map_or_else(|| "+Inf".to_string(), |us| seconds(*us));
            let labels = [("worker", worker.as_str()), ("le", le.as_str())];
            page.sample(
                "rgunicorn_request_duration_seconds_bucket",
                &labels,
                cumulative,
            );
        }
        let sum = seconds(load(&v.meters.duration_sum_us));
        let labels = [("worker", worker.as_str())];
        page.sample("rgunicorn_request_duration_seconds_sum", &labels, sum);
        page.sample(
            "rgunicorn_request_duration_seconds_count",
            &labels,
            cumulative,
        );
    }
}

fn load(cell: &std::sync::atomic::AtomicU64) -> u64 {
    cell.load(Ordering::Relaxed)
}

/// Microseconds as decimal seconds, exactly (`2500` is `0.0025`).
fn seconds(micros: u64) -> String {
    let (whole, frac) = (micros / 1_000_000, micros % 1_000_000);
    if frac == 0 {
        return whole.to_string();
    }
    let digits = format!("{frac:06}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

/// The page being written.
#[derive(Default)]
struct Page {
    out: String,
}

impl Page {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (key, value)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{key}=\"");
                escape_label(&mut self.out, value);
                self.out.push('"');
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }

    fn sample_owned(
        &mut self,
        name: &str,
        labels: &[(&str, String)],
        value: impl std::fmt::Display,
    ) {
        let borrowed: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
        self.sample(name, &borrowed, value);
    }
}

/// A label value as the text format wants it: backslash, double quote and newline escaped.
fn escape_label(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::log::meters::Meters;

    fn snapshot() -> Snapshot {
        let meters = Meters::new(2).unwrap();
        let m = meters.slot(0);
        m.responses[1].store(3, Ordering::Relaxed);
        m.duration[0].store(2, Ordering::Relaxed);
        m.duration[3].store(1, Ordering::Relaxed);
        m.duration_sum_us.store(12_500, Ordering::Relaxed);
        m.busy.store(1, Ordering::Relaxed);
        Snapshot {
            start_time: 1_700_000_000.5,
            master_rss: Some(4096),
            workers_target: 2,
            spawned: 3,
            respawned: vec![("error", 1), ("timeout", 0)],
            reloads: 0,
            rescued: 0,
            listeners: vec![("http://127.0.0.1:8000".to_string(), 0, 2048)],
            slots: vec![
                SlotView {
                    slot: 0,
                    meters: m,
                    live: Some(LiveWorker {
                        pid: 42,
                        age: 3,
                        uptime_seconds: 1.5,
                        rss: Some(1 << 20),
                    }),
                },
                SlotView {
                    slot: 1,
                    meters: meters.slot(1),
                    live: None,
                },
            ],
        }
    }

    #[test]
    fn every_family_has_help_and_type_before_its_samples() {
        let page = render(&snapshot());
        let mut declared = std::collections::HashSet::new();
        for line in page.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let name = rest.split(' ').next().unwrap();
                assert!(declared.insert(name.to_string()), "{name} declared twice");
                continue;
            }
            if line.starts_with('#') {
                continue;
            }
            let name = line.split(['{', ' ']).next().unwrap();
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s).filter(|f| declared.contains(*f)))
                .unwrap_or(name);
            assert!(declared.contains(family), "{line}: no TYPE before it");
        }
    }

    #[test]
    fn the_histogram_is_cumulative_and_counts_every_request() {
        let page = render(&snapshot());
        assert!(page
            .contains("rgunicorn_request_duration_seconds_bucket{worker=\"1\",le=\"0.001\"} 2\n"));
        assert!(page
            .contains("rgunicorn_request_duration_seconds_bucket{worker=\"1\",le=\"0.01\"} 3\n"));
        assert!(page
            .contains("rgunicorn_request_duration_seconds_bucket{worker=\"1\",le=\"+Inf\"} 3\n"));
        assert!(page.contains("rgunicorn_request_duration_seconds_sum{worker=\"1\"} 0.0125\n"));
        assert!(page.contains("rgunicorn_request_duration_seconds_count{worker=\"1\"} 3\n"));
        assert!(page.contains("rgunicorn_requests_total{worker=\"1\",status=\"2xx\"} 3\n"));
    }

    #[test]
    fn a_slot_without_a_worker_keeps_its_counters_but_no_gauges() {
        let page = render(&snapshot());
        assert!(page.contains("rgunicorn_requests_total{worker=\"2\",status=\"2xx\"} 0\n"));
        assert!(page.contains("rgunicorn_worker_threads_busy{worker=\"1\"} 1\n"));
        assert!(!page.contains("rgunicorn_worker_threads_busy{worker=\"2\"}"));
        assert!(page.contains("rgunicorn_worker_info{worker=\"1\",pid=\"42\",age=\"3\"} 1\n"));
        assert!(page.contains("rgunicorn_workers 1\n"));
        assert!(page.contains("rgunicorn_workers_busy 1\n"));
    }

    #[test]
    fn seconds_are_exact_decimals_and_labels_are_escaped() {
        assert_eq!(seconds(2_500), "0.0025");
        assert_eq!(seconds(30_000_000), "30");
        assert_eq!(seconds(1_000_001), "1.000001");
        let mut out = String::new();
        escape_label(&mut out, "unix:/tmp/a\"b\\c\n");
        assert_eq!(out, "unix:/tmp/a\\\"b\\\\c\\n");
    }
}
