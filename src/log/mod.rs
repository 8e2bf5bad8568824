//! Logging: Gunicorn's error log (`[time] [pid] [LEVEL] message`) fed by `tracing` events and
//! by Python's `gunicorn.error` logger, and the access log (`access`).
//!
//! Writes are synchronous, one `write` per line, with no background thread: the master forks,
//! and a lock held by a logging thread at fork time would stay locked in the child forever.

pub mod access;
mod level;
pub mod meters;
pub mod python;
mod sink;
pub mod statsd;
pub mod syslog;
mod time;
mod udp;

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Mutex;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::Layer;

pub use level::LogLevel;
pub use sink::Sink;
pub use udp::{resolve, udp_client};

pub use time::{access_time, error_time};

/// Logs at Gunicorn's CRITICAL level (tracing has no such level; the field marks it).
#[macro_export]
macro_rules! critical {
    ($($arg:tt)*) => { ::tracing::error!(critical = true, $($arg)*) };
}

static ERROR_SINK: Mutex<Option<Sink>> = Mutex::new(None);
static LEVEL: AtomicU8 = AtomicU8::new(LogLevel::Info as u8);

/// Changes the error log's level (a logging configuration may set its own).
pub fn set_level(level: LogLevel) {
    LEVEL.store(level as u8, Ordering::Relaxed);
}

/// Whether a message at `level` would be written.
pub fn enabled(level: LogLevel) -> bool {
    level as u8 >= LEVEL.load(Ordering::Relaxed)
}

/// Gunicorn's level names.
pub fn level_name(level: LogLevel) -> &'static str {
    match level {
        LogLevel::Debug => "DEBUG",
        LogLevel::Info => "INFO",
        LogLevel::Warning => "WARNING",
        LogLevel::Error => "ERROR",
        LogLevel::Critical => "CRITICAL",
    }
}

/// Writes `message` (and an optional traceback after it) to the error log, if `level` is on.
pub fn error_log(level: LogLevel, message: &str, traceback: Option<&str>) {
    if !enabled(level) {
        return;
    }
    match (level, traceback.is_some()) {
        (LogLevel::Error | LogLevel::Critical, true) => statsd::log_line("exception"),
        (LogLevel::Critical, false) => statsd::log_line("critical"),
        (LogLevel::Error, false) => statsd::log_line("error"),
        (LogLevel::Warning, _) => statsd::log_line("warning"),
        _ => {}
    }
    syslog::error(level, message);
    if python::is_active() {
        python::error(level, message, traceback);
        return;
    }
    let mut line = format!(
        "{} [{}] [{}] {}\n",
        error_time(),
        std::process::id(),
        level_name(level),
        message
    );
    if let Some(tb) = traceback {
        line.push_str(tb);
        if !tb.ends_with('\n') {
            line.push('\n');
        }
    }
    let mut guard = ERROR_SINK.lock().unwrap_or_else(|p| p.into_inner());
    // Nowhere is left to report a failure of the error log itself.
    let _ = match guard.as_mut() {
        Some(sink) => sink.write_line(line.as_bytes()),
        None => Sink::Stderr.write_line(line.as_bytes()),
    };
}

/// Writes raw text (a bare line, as Python's last-resort handler would) to the error log.
pub fn error_log_raw(text: &str) {
    let mut guard = ERROR_SINK.lock().unwrap_or_else(|p| p.into_inner());
    let _ = match guard.as_mut() {
        Some(sink) => sink.write_line(text.as_bytes()),
        None => Sink::Stderr.write_line(text.as_bytes()),
    };
}

/// Points file descriptors 1 and 2 at the error log file (`--capture-output`).
///
/// # Errors
/// The error log is not a file, or dup2 failed.
pub fn capture_output() -> std::io::Result<()> {
    let guard = ERROR_SINK.lock().unwrap_or_else(|p| p.into_inner());
    let Some(Sink::File { file, .. }) = guard.as_ref() else {
        return Ok(());
    };
    nix::unistd::dup2_stdout(file)?;
    nix::unistd::dup2_stderr(file)?;
    Ok(())
}

/// Reopens the error log file (USR1).
pub fn reopen() {
    if let Some(sink) = ERROR_SINK
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .as_mut()
    {
        sink.reopen();
    }
}

/// Sets up the error log: its destination and level, and the `tracing` bridge.
///
/// # Errors
/// The error log file cannot be opened.
pub fn init(errorlog: &str, level: LogLevel) -> std::io::Result<()> {
    let sink = Sink::open(errorlog, Sink::Stderr)?;
    *ERROR_SINK.lock().unwrap_or_else(|p| p.into_inner()) = Some(sink);
    LEVEL.store(level as u8, Ordering::Relaxed);
    let subscriber = tracing_subscriber::registry().with(ErrorLogLayer);
    // A second init (tests, re-exec) keeps the first subscriber, which writes to the same sink.
    let _ = tracing::subscriber::set_global_default(subscriber);
    Ok(())
}

/// Routes `tracing` events into the error log.
struct ErrorLogLayer;

#[derive(Default)]
struct Fields {
    message: String,
    critical: bool,
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            use std::fmt::Write as _;
            let _ = write!(self.message, "{value:?}");
        }
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        }
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        if field.name() == "critical" {
            self.critical = value;
        }
    }
}

impl<S: Subscriber> Layer<S> for ErrorLogLayer {
    fn enabled(&self, metadata: &tracing::Metadata<'_>, _: Context<'_, S>) -> bool {
        enabled(to_level(*metadata.level()))
    }

    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let level = if fields.critical {
            LogLevel::Critical
        } else {
            to_level(*event.metadata().level())
        };
        error_log(level, &fields.message, None);
    }
}

fn to_level(level: Level) -> LogLevel {
    match level {
        Level::ERROR => LogLevel::Error,
        Level::WARN => LogLevel::Warning,
        Level::INFO => LogLevel::Info,
        Level::DEBUG | Level::TRACE => LogLevel::Debug,
    }
}
