//! Process titles as `ps` shows them: `rgunicorn: master [<name>]`, `rgunicorn: worker [<name>]`.
//!
//! Gunicorn gets these from the `setproctitle` package; this module does the same thing on
//! Linux without a crate. `ps -ef`/`ps aux` read `/proc/<pid>/cmdline`, which the kernel
//! serves straight from the process's argv strings, so [`set`] rewrites those strings in
//! place; `ps -o comm` and `top` read `/proc/<pid>/comm`, which [`set`] changes through
//! `prctl(PR_SET_NAME)`.
//!
//! How [`init`] finds room: `/proc/self/stat` (proc(5) fields 48–51) gives the exact range the
//! kernel copied the argv strings to, and the environment strings right after them. That
//! whole range is the title area, so before anything writes there [`init`] moves what still
//! points into it onto the heap: every `argv[i]` (std's `env::args` reads them lazily), every
//! `environ[i]` (so `getenv`/`std::env` keep working) and glibc's `program_invocation_name`.
//! The argv table itself is found at `startstack` (field 28), where the kernel put `argc`.
//! If any of that does not check out, nothing is moved and [`set`] only renames the thread.
//!
//! It deliberately does not use `prctl(PR_SET_MM_ARG_START/ARG_END)`: that needs
//! `CAP_SYS_RESOURCE`, and the argv + environ area (kilobytes) already holds any title
//! Gunicorn's format produces. It does not decide what the title says either; the master and
//! the workers do, in Gunicorn's `"{prefix}: {role} [{proc_name}]"` form. On other systems
//! both functions do nothing.

/// Captures where argv and environ live. Call once, early in main, before any thread starts
/// and before anything modifies the environment. Safe to call more than once (no-op after the first).
pub fn init() {
    #[cfg(target_os = "linux")]
    linux::init();
}

/// Sets the title: rewrites the argv area in place (so /proc/self/cmdline shows `title`) and sets
/// the thread name (prctl PR_SET_NAME, truncated to 15 bytes). Titles longer than the available
/// area are truncated; never writes out of bounds. Works in forked children (the area is copied).
///
/// The title ends at its first NUL byte, and truncation never splits a UTF-8 character. Without
/// a successful [`init`] only the thread name changes. `/proc/<pid>/comm` shows the main
/// thread's name, so call it from the main thread (in a freshly forked child, the only one).
pub fn set(title: &str) {
    let title = title.split('\0').next().unwrap_or_default();
    #[cfg(target_os = "linux")]
    linux::set(title);
    #[cfg(not(target_os = "linux"))]
    let _ = title;
}

/// The longest prefix of `title` that fits in `max_bytes` without splitting a character.
fn truncate(title: &str, max_bytes: usize) -> &str {
    let mut end = title.len().min(max_bytes);
    while !title.is_char_boundary(end) {
        end -= 1;
    }
    title.get(..end).unwrap_or_default()
}

/// Where the kernel laid out the process's initial stack, from `/proc/self/stat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct StackLayout {
    /// Field 28: the address of `argc`, right below the argv pointer table.
    start_stack: usize,
    /// Field 48: the first byte of the argv strings.
    arg_start: usize,
    /// Field 49: one past the last argv string's NUL.
    arg_end: usize,
    /// Field 50: the first byte of the environment strings.
    env_start: usize,
    /// Field 51: one past the last environment string's NUL.
    env_end: usize,
}

impl StackLayout {
    /// Reads fields 28 and 48–51 of a `/proc/<pid>/stat` line; `None` if they are missing,
    /// unparsable, or zero (the kernel hides them from readers without ptrace access).
    fn parse(stat: &str) -> Option<Self> {
        // `comm` (field 2) may hold spaces and `)`; the fields after its last `)` start at 3.
        let (_, rest) = stat.rsplit_once(')')?;
        let fields: Vec<&str> = rest.split_ascii_whitespace().collect();
        let field = |n: usize| -> Option<usize> {
            let value = fields.get(n.checked_sub(3)?)?.parse().ok()?;
            (value != 0).then_some(value)
        };
        Some(Self {
            start_stack: field(28)?,
            arg_start: field(48)?,
            arg_end: field(49)?,
            env_start: field(50)?,
            env_end: field(51)?,
        })
    }

    /// One past the title area: the argv strings, plus the environment strings when they
    /// follow contiguously (as exec leaves them; `/proc/<pid>/cmdline` reads on into them
    /// only in that case). `None` if the addresses are not in exec's order.
    fn area_end(&self) -> Option<usize> {
        if !(self.start_stack < self.arg_start && self.arg_start < self.arg_end) {
            return None;
        }
        if self.env_start == self.arg_end && self.env_end > self.env_start {
            Some(self.env_end)
        } else {
            Some(self.arg_end)
        }
    }
}

/// Whether one mapping in a `/proc/<pid>/maps` listing is readable and writable and covers
/// all of `start..end`.
fn is_covered_by_writable_mapping(maps: &str, start: usize, end: usize) -> bool {
    maps.lines().any(|line| {
        let mut columns = line.split_ascii_whitespace();
        let (Some(range), Some(perms)) = (columns.next(), columns.next()) else {
            return false;
        };
        let Some((low, high)) = range.split_once('-') else {
            return false;
        };
        let (Ok(low), Ok(high)) = (
            usize::from_str_radix(low, 16),
            usize::from_str_radix(high, 16),
        ) else {
            return false;
        };
        perms.starts_with("rw") && low <= start && end <= high
    })
}

#[cfg(target_os = "linux")]
mod linux {
    use std::ffi::{c_char, CStr};
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::OnceLock;

    use super::{is_covered_by_writable_mapping, truncate, StackLayout};

    extern "C" {
        // glibc and musl both export these three (unistd.h, errno.h with _GNU_SOURCE).
        static mut environ: *mut *mut c_char;
        static mut program_invocation_name: *mut c_char;
        static mut program_invocation_short_name: *mut c_char;
    }

    /// The title area, or `None` when [`init`] found it unsafe to use; unset before `init`.
    static AREA: OnceLock<Option<Area>> = OnceLock::new();

    /// PID of the process whose `set` is writing the area; 0 when no one is.
    static WRITER: AtomicU32 = AtomicU32::new(0);

    /// The bytes `/proc/<pid>/cmdline` is served from, all ours once [`init`] has moved
    /// argv and environ out. Kept as addresses so the static is `Send + Sync`.
    #[derive(Debug, Clone, Copy)]
    struct Area {
        /// `arg_start`.
        start: usize,
        /// Bytes from `arg_start` to the end of the area; at least 1.
        len: usize,
    }

    pub(super) fn init() {
        AREA.get_or_init(capture);
    }

    pub(super) fn set(title: &str) {
        if let Ok(name) = CStr::from_bytes_until_nul(&thread_name(title)) {
            // Failure only leaves the old name; the cmdline title is the one that matters.
            let _ = nix::sys::prctl::set_name(name);
        }
        if let Some(Some(area)) = AREA.get() {
            let _writer = WriterGuard::acquire();
            area.write(title);
        }
    }

    /// `title` cut to the kernel's 15-byte `comm` limit, NUL-padded for `PR_SET_NAME`.
    fn thread_name(title: &str) -> [u8; 16] {
        let mut name = [0; 16];
        let short = truncate(title, 15).as_bytes();
        name[..short.len()].copy_from_slice(short);
        name
    }

    impl Area {
        /// Writes `title` (truncated to leave a NUL) and zero-fills the rest, as setproctitle
        /// pads on Linux; `ps` drops trailing NULs.
        fn write(&self, title: &str) {
            let title = truncate(title, self.len - 1).as_bytes();
            let base = self.start as *mut u8;
            // SAFETY: `capture` checked that [start, start + len) is one read-write mapping
            // that nothing points into any more (argv, environ and program_invocation_name
            // were moved to the heap); `title.len() <= len - 1`, so both writes stay inside
            // it. `WriterGuard` keeps other threads of this process out meanwhile.
            unsafe {
                std::ptr::copy_nonoverlapping(title.as_ptr(), base, title.len());
                std::ptr::write_bytes(base.add(title.len()), 0, self.len - title.len());
            }
        }
    }

    /// Serialises writers to the area, without deadlocking a child forked while another
    /// thread of its parent was writing: that thread does not exist in the child, so a lock
    /// held under another PID is taken over.
    struct WriterGuard;

    impl WriterGuard {
        fn acquire() -> Self {
            let me = std::process::id();
            loop {
                match WRITER.compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed) {
                    Ok(_) => return Self,
                    Err(holder) if holder != me => {
                        let taken = WRITER.compare_exchange(
                            holder,
                            me,
                            Ordering::Acquire,
                            Ordering::Relaxed,
                        );
                        if taken.is_ok() {
                            return Self;
                        }
                    }
                    Err(_) => std::thread::yield_now(),
                }
            }
        }
    }

    impl Drop for WriterGuard {
        fn drop(&mut self) {
            WRITER.store(0, Ordering::Release);
        }
    }

    /// Finds the title area and moves everything that points into it to the heap; `None`
    /// (and nothing moved) if any check fails.
    fn capture() -> Option<Area> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let layout = StackLayout::parse(&stat)?;
        let end = layout.area_end()?;
        let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
        // One mapping from `argc` to the end of the area: every read and write below is
        // inside it (the stack only ever grows downwards, away from this range).
        if !is_covered_by_writable_mapping(&maps, layout.start_stack, end) {
            return None;
        }
        let area = Area {
            start: layout.arg_start,
            len: end - layout.arg_start,
        };
        // Under valgrind (or any loader that builds the program's argv itself) the kernel's
        // argument area is the loader's own: libc's argv[0] is elsewhere. Writing a title
        // there would wipe the loader's options (valgrind's workers then exit with status 1
        // for want of their output file names).
        // SAFETY: a plain read of a libc global; `init`'s contract is that no other thread
        // runs yet.
        if !area.contains(unsafe { program_invocation_name } as usize) {
            return None;
        }
        // SAFETY: `end - 1` is inside the mapping checked above.
        if unsafe { *((end - 1) as *const u8) } != 0 {
            return None;
        }
        let (argv, argc) = find_argv(&layout)?;
        // SAFETY: `find_argv` checked that argv[0..argc] are in the mapping, aligned, and point
        // at strings inside the area, which ends in a NUL, so each is NUL-terminated.
        unsafe { move_out(argv, Some(argc), &area) };
        // SAFETY: `environ` is libc's NULL-terminated table (or NULL after clearenv); `init`'s
        // contract is that no other thread exists to race with this rewrite. Entries pointing
        // into the area end at its final NUL at the latest.
        unsafe {
            let table = environ;
            if !table.is_null() {
                move_out(table, None, &area);
            }
        }
        // SAFETY: plain loads and stores of libc globals, single-threaded by `init`'s contract;
        // the old name is inside the area, so it is NUL-terminated, and the short name (the
        // part after the last '/') is a suffix of it, so the offset is valid in the copy.
        unsafe {
            let name = program_invocation_name;
            if area.contains(name as usize) {
                let short = program_invocation_short_name;
                let copy = CStr::from_ptr(name).to_owned().into_raw();
                if let Some(offset) = (short as usize).checked_sub(name as usize) {
                    if offset <= CStr::from_ptr(name).to_bytes().len() {
                        program_invocation_short_name = copy.add(offset);
                    }
                }
                program_invocation_name = copy;
            }
        }
        Some(area)
    }

    /// The argv table and argc: `argc` sits at `startstack`, the table right after it.
    /// `None` unless the table is aligned, NULL-terminated, below the strings, and every
    /// entry points into the argv strings.
    fn find_argv(layout: &StackLayout) -> Option<(*mut *mut c_char, usize)> {
        let word = std::mem::size_of::<usize>();
        let argc_slot = layout.start_stack as *const usize;
        if !argc_slot.is_aligned() {
            return None;
        }
        // SAFETY: `start_stack` is aligned and inside the mapping `capture` checked.
        let argc = unsafe { *argc_slot };
        let table_end = argc
            .checked_add(2)?
            .checked_mul(word)?
            .checked_add(layout.start_stack)?;
        if argc == 0 || table_end > layout.arg_start {
            return None;
        }
        let argv = (layout.start_stack + word) as *mut *mut c_char;
        let strings = layout.arg_start..layout.arg_end;
        for i in 0..argc {
            // SAFETY: i < argc and the table [start_stack + word, table_end) lies below
            // `arg_start`, inside the checked mapping; pointer-sized and aligned.
            let entry = unsafe { *argv.add(i) } as usize;
            if !strings.contains(&entry) {
                return None;
            }
        }
        // SAFETY: as above, slot `argc` is still below `table_end`.
        let terminator = unsafe { *argv.add(argc) };
        terminator.is_null().then_some((argv, argc))
    }

    /// Replaces each entry of `table` that points into `area` with a leaked heap copy of its
    /// string; stops after `count` entries, or at the NULL entry when `count` is `None`.
    ///
    /// # Safety
    /// `table` must be valid for reads and writes up to that point, no other thread may use
    /// it meanwhile, and every entry must be NULL or point to a NUL-terminated string.
    unsafe fn move_out(table: *mut *mut c_char, count: Option<usize>, area: &Area) {
        let mut i = 0;
        while count.is_none_or(|count| i < count) {
            // SAFETY: within the valid prefix of `table`, per this function's contract.
            let slot = unsafe { table.add(i) };
            // SAFETY: as above.
            let entry = unsafe { *slot };
            if entry.is_null() {
                break;
            }
            if area.contains(entry as usize) {
                // SAFETY: entries are NUL-terminated strings (contract); the copy is leaked on
                // purpose, as the table keeps pointing at it for the life of the process.
                unsafe { *slot = CStr::from_ptr(entry).to_owned().into_raw() };
            }
            i += 1;
        }
    }

    impl Area {
        fn contains(&self, address: usize) -> bool {
            (self.start..self.start + self.len).contains(&address)
        }
    }

    /// Bytes available for a title (including its NUL), for tests to overflow it.
    #[cfg(test)]
    pub(super) fn capacity() -> Option<usize> {
        AREA.get().copied().flatten().map(|area| area.len)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A real `/proc/self/stat` line, its `comm` made awkward (spaces and parentheses).
    const STAT: &str = "6943 (we (ird) name) R 6941 6941 3218 0 -1 4194304 100 0 0 0 0 0 0 0 \
        20 0 1 0 215732 3133440 382 18446744073709551615 94226436145152 94226436165033 \
        140731269613616 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0 94226436181040 94226436182656 \
        94226845904896 140731269622301 140731269622321 140731269622321 140731269623787 0";

    #[test]
    fn stat_fields_are_read_after_the_last_parenthesis() {
        assert_eq!(
            StackLayout::parse(STAT),
            Some(StackLayout {
                start_stack: 140731269613616,
                arg_start: 140731269622301,
                arg_end: 140731269622321,
                env_start: 140731269622321,
                env_end: 140731269623787,
            })
        );
    }

    #[test]
    fn stat_with_hidden_addresses_gives_none() {
        let hidden = STAT.replace("140731269622301", "0");
        assert_eq!(StackLayout::parse(&hidden), None);
        assert_eq!(StackLayout::parse("6943 (cat) R 1 2 3"), None);
        assert_eq!(StackLayout::parse("no parenthesis"), None);
    }

    #[test]
    fn area_spans_environment_only_when_contiguous() {
        let layout = StackLayout::parse(STAT).unwrap();
        assert_eq!(layout.area_end(), Some(140731269623787));
        let apart = StackLayout {
            env_start: layout.arg_end + 8,
            ..layout
        };
        assert_eq!(apart.area_end(), Some(layout.arg_end));
        let reversed = StackLayout {
            arg_end: layout.arg_start,
            ..layout
        };
        assert_eq!(reversed.area_end(), None);
    }

    #[test]
    fn area_must_lie_in_one_writable_mapping() {
        let maps = "55d0a0000000-55d0a0001000 r--p 00000000 08:01 42 /usr/bin/rgunicorn\n\
                    7ffd8d412000-7ffd8d433000 rw-p 00000000 00:00 0 [stack]\n\
                    7ffd8d433000-7ffd8d434000 r--p 00000000 00:00 0 [vvar]\n";
        assert!(is_covered_by_writable_mapping(
            maps,
            0x7ffd8d412000,
            0x7ffd8d433000
        ));
        assert!(!is_covered_by_writable_mapping(
            maps,
            0x7ffd8d412000,
            0x7ffd8d433001
        ));
        assert!(!is_covered_by_writable_mapping(
            maps,
            0x55d0a0000000,
            0x55d0a0000010
        ));
        assert!(!is_covered_by_writable_mapping("garbage\n\n", 1, 2));
    }

    #[test]
    fn truncation_never_splits_a_character() {
        assert_eq!(truncate("rgunicorn: master [x]", 15), "rgunicorn: mast");
        assert_eq!(truncate("ééé", 5), "éé");
        assert_eq!(truncate("ééé", 1), "");
        assert_eq!(truncate("short", 15), "short");
    }

    /// Set in the re-executed test binary, which runs the real-process checks.
    const CHILD_ENV: &str = "RGUNICORN_PROCTITLE_TEST_CHILD";

    /// `init` rewrites process-wide state, so the checks run in a fresh copy of this test
    /// binary running only this test, not in the harness's shared, multi-threaded process.
    #[test]
    fn set_shows_the_title_in_proc_and_keeps_args_and_env() {
        if std::env::var_os(CHILD_ENV).is_some() {
            #[cfg(target_os = "linux")]
            real_process_checks();
            return;
        }
        let name = concat!(
            module_path!(),
            "::set_shows_the_title_in_proc_and_keeps_args_and_env"
        );
        let name = name.split_once("::").unwrap().1;
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([name, "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, "1")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "child failed:\n{stdout}\n{stderr}");
        assert!(stdout.contains("1 passed"), "child ran no test:\n{stdout}");
    }

    #[cfg(target_os = "linux")]
    fn cmdline() -> Vec<u8> {
        std::fs::read("/proc/self/cmdline").unwrap()
    }

    #[cfg(target_os = "linux")]
    fn thread_comm() -> String {
        std::fs::read_to_string("/proc/thread-self/comm").unwrap()
    }

    /// The string the kernel stored just above the environment (`AT_EXECFN`): it must
    /// survive every `set`.
    #[cfg(target_os = "linux")]
    fn exec_filename() -> Vec<u8> {
        // SAFETY: getauxval has no preconditions; AT_EXECFN is a NUL-terminated string.
        unsafe {
            let name = nix::libc::getauxval(nix::libc::AT_EXECFN) as *const std::ffi::c_char;
            std::ffi::CStr::from_ptr(name).to_bytes().to_vec()
        }
    }

    #[cfg(target_os = "linux")]
    fn real_process_checks() {
        use nix::sys::wait::{waitpid, WaitStatus};
        use nix::unistd::{fork, ForkResult};

        let args: Vec<_> = std::env::args_os().collect();
        let path = std::env::var_os("PATH");
        let execfn = exec_filename();

        init();
        init();
        let capacity = linux::capacity().expect("init found the argv area");
        set("rgunicorn: test [x]");
        assert!(cmdline().starts_with(b"rgunicorn: test [x]\0"));
        assert_eq!(thread_comm(), "rgunicorn: test\n");
        assert_eq!(std::env::var_os("PATH"), path);
        assert_eq!(std::env::var(CHILD_ENV).unwrap(), "1");
        assert_eq!(std::env::args_os().collect::<Vec<_>>(), args);

        // SAFETY: the child only calls `set`, reads /proc and exits; with --test-threads=1
        // the harness's main thread just waits on this one.
        match unsafe { fork() }.unwrap() {
            ForkResult::Child => {
                set("rgunicorn: worker [x]");
                let ok = cmdline().starts_with(b"rgunicorn: worker [x]\0")
                    && std::env::var_os("PATH") == path;
                // SAFETY: _exit skips the harness's atexit/unwinding in the forked copy.
                unsafe { nix::libc::_exit(if ok { 0 } else { 1 }) };
            }
            ForkResult::Parent { child } => {
                assert_eq!(waitpid(child, None).unwrap(), WaitStatus::Exited(child, 0));
            }
        }
        assert!(cmdline().starts_with(b"rgunicorn: test [x]\0"));

        let long = "y".repeat(capacity + 100);
        set(&long);
        let shown = cmdline();
        let run = shown.iter().take_while(|&&b| b == b'y').count();
        // Past the argv strings the kernel serves at most a page of an overflowing title.
        assert!(
            run < capacity && run >= (capacity - 1).min(4095),
            "{run} {capacity}"
        );
        assert_eq!(exec_filename(), execfn);
        assert_eq!(std::env::var_os("PATH"), path);

        set(&"é".repeat(capacity));
        assert!(cmdline().starts_with("éé".as_bytes()));
        set("after\0hidden");
        assert!(cmdline().starts_with(b"after\0"));
        assert_eq!(thread_comm(), "after\n");
        assert_eq!(std::env::args_os().collect::<Vec<_>>(), args);
    }
}
