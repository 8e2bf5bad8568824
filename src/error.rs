//! Exit statuses, named once (Gunicorn's values, which supervisors and scripts check).

/// Success, and also what a worker returns after a graceful stop.
pub const EXIT_OK: i32 = 0;
/// A bad setting, a missing app module, a bind that never succeeded: `Error: ...`.
pub const EXIT_CONFIG: i32 = 1;
/// A command-line usage error (unknown flag, wrong value type).
pub const EXIT_USAGE: i32 = 2;
/// A worker failed to boot (an exception while importing the app): the master halts.
pub const WORKER_BOOT_ERROR: i32 = 3;
/// The app could not be loaded (missing attribute, not callable): the master halts.
pub const APP_LOAD_ERROR: i32 = 4;
