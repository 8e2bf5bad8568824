//! Local-time stamps for the logs, cached per second (one `localtime_r` per second, not per line).

use std::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};

use nix::libc;

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

struct Cached {
    second: i64,
    error: String,
    access: String,
}

thread_local! {
    static CACHE: RefCell<Cached> = const {
        RefCell::new(Cached { second: -1, error: String::new(), access: String::new() })
    };
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(0))
        .unwrap_or(0)
}

fn local(secs: i64) -> libc::tm {
    // SAFETY: an all-zero `tm` is a valid value; localtime_r only writes into it.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    let t: libc::time_t = secs;
    // SAFETY: both pointers are valid for the call; localtime_r is the thread-safe variant.
    unsafe { libc::localtime_r(&t, &mut tm) };
    tm
}

fn offset(tm: &libc::tm) -> String {
    let off = tm.tm_gmtoff;
    let sign = if off < 0 { '-' } else { '+' };
    let off = off.abs();
    format!("{sign}{:02}{:02}", off / 3600, (off % 3600) / 60)
}

fn refresh(cache: &mut Cached) {
    let secs = now_secs();
    if cache.second == secs {
        return;
    }
    let tm = local(secs);
    let month = MONTHS[usize::try_from(tm.tm_mon).unwrap_or(0) % 12];
    let off = offset(&tm);
    cache.error = format!(
        "[{:04}-{:02}-{:02} {:02}:{:02}:{:02} {off}]",
        tm.tm_year + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec
    );
    cache.access = format!(
        "[{:02}/{month}/{:04}:{:02}:{:02}:{:02} {off}]",
        tm.tm_mday,
        tm.tm_year + 1900,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec
    );
    cache.second = secs;
}

/// `[%Y-%m-%d %H:%M:%S %z]`, the error log's stamp.
pub fn error_time() -> String {
    CACHE.with(|c| {
        let mut c = c.borrow_mut();
        refresh(&mut c);
        c.error.clone()
    })
}

/// `[%d/%b/%Y:%H:%M:%S %z]`, the access log's `%(t)s`.
pub fn access_time() -> String {
    CACHE.with(|c| {
        let mut c = c.borrow_mut();
        refresh(&mut c);
        c.access.clone()
    })
}
