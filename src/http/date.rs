//! The `Date` header value: IMF-fixdate (RFC 9110 §5.6.7), formatted at most once
//! per second.
//!
//! Owns calendar arithmetic from Unix seconds (pure std, no chrono) and a small
//! per-second cache. Does not own the clock source beyond `SystemTime::now`.

use std::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};

/// Length of an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`).
pub const IMF_FIXDATE_LEN: usize = 29;

const DAYS: [&[u8; 3]; 7] = [b"Thu", b"Fri", b"Sat", b"Sun", b"Mon", b"Tue", b"Wed"];
const MONTHS: [&[u8; 3]; 12] = [
    b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec",
];

/// Last second an IMF-fixdate can show (9999-12-31T23:59:59Z); later times are clamped.
const MAX_UNIX_SECS: u64 = 253_402_300_799;

/// Formats Unix seconds as an IMF-fixdate, e.g. `Sun, 06 Nov 1994 08:49:37 GMT`.
/// Times after year 9999 are clamped to its last second.
pub fn imf_fixdate(unix_secs: u64) -> [u8; IMF_FIXDATE_LEN] {
    let secs = unix_secs.min(MAX_UNIX_SECS);
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (hour, minute, second) = (rem / 3600, rem / 60 % 60, rem % 60);
    let (year, month, day) = civil_from_days(days);

    let mut out = *b"Thu, 01 Jan 1970 00:00:00 GMT";
    out[..3].copy_from_slice(DAYS[(days % 7) as usize]);
    put2(&mut out[5..7], day);
    out[8..11].copy_from_slice(MONTHS[(month - 1) as usize]);
    put2(&mut out[12..14], year / 100);
    put2(&mut out[14..16], year % 100);
    put2(&mut out[17..19], hour);
    put2(&mut out[20..22], minute);
    put2(&mut out[23..25], second);
    out
}

/// Writes a two-digit number.
fn put2(dst: &mut [u8], n: u64) {
    dst[0] = b'0' + (n / 10 % 10) as u8;
    dst[1] = b'0' + (n % 10) as u8;
}

/// Days since 1970-01-01 to (year, month 1-12, day 1-31), proleptic Gregorian
/// (Howard Hinnant's `civil_from_days`, for non-negative days).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// (year, month 1-12, day 1-31) to days since 1970-01-01 (Hinnant's `days_from_civil`),
/// for dates from 1970 on; None before.
fn days_from_civil(year: u64, month: u64, day: u64) -> Option<u64> {
    let y = if month <= 2 {
        year.checked_sub(1)?
    } else {
        year
    };
    let era = y / 400;
    let yoe = y % 400;
    let mp = if month > 2 { month - 3 } else { month + 9 };
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    (era * 146_097 + doe).checked_sub(719_468)
}

/// Reads an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`, the only form a sender may
/// generate, RFC 9110 §5.6.7) as Unix seconds; None for anything else, which a
/// conditional request then ignores (§13.1.3).
pub fn parse_imf_fixdate(text: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(text).ok()?.trim();
    let b = text.as_bytes();
    if b.len() != IMF_FIXDATE_LEN || &b[3..5] != b", " || !text.ends_with(" GMT") {
        return None;
    }
    let num = |range: std::ops::Range<usize>| -> Option<u64> {
        let digits = text.get(range)?;
        digits
            .bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| digits.parse().ok())?
    };
    let day = num(5..7)?;
    let month = MONTHS.iter().position(|m| &b[8..11] == *m)? as u64 + 1;
    let year = num(12..16)?;
    let (hour, minute, second) = (num(17..19)?, num(20..22)?, num(23..25)?);
    if b[7] != b' ' || b[11] != b' ' || b[16] != b' ' || b[19] != b':' || b[22] != b':' {
        return None;
    }
    if !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let days = days_from_civil(year, month, day)?;
    Some(days * 86_400 + hour * 3600 + minute * 60 + second)
}

/// A `Date` value recomputed only when the second changes. Owned by whoever
/// writes responses (one per worker thread); see also [`now`].
#[derive(Debug, Clone)]
pub struct DateCache {
    second: u64,
    value: [u8; IMF_FIXDATE_LEN],
}

impl DateCache {
    /// An empty cache; the first call formats.
    pub fn new() -> DateCache {
        DateCache {
            second: u64::MAX,
            value: [0; IMF_FIXDATE_LEN],
        }
    }

    /// The date for `unix_secs`, formatting only if the second differs from the last call.
    pub fn at(&mut self, unix_secs: u64) -> &[u8; IMF_FIXDATE_LEN] {
        if unix_secs != self.second {
            self.value = imf_fixdate(unix_secs);
            self.second = unix_secs;
        }
        &self.value
    }

    /// The date for the current second of the system clock.
    pub fn now(&mut self) -> &[u8; IMF_FIXDATE_LEN] {
        self.at(unix_now())
    }
}

impl Default for DateCache {
    fn default() -> DateCache {
        DateCache::new()
    }
}

/// Current Unix time in whole seconds (0 if the clock is before 1970).
fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

thread_local! {
    static CACHE: RefCell<DateCache> = RefCell::new(DateCache::new());
}

/// The `Date` value for now, from a thread-local [`DateCache`].
pub fn now() -> [u8; IMF_FIXDATE_LEN] {
    CACHE.with(|cache| *cache.borrow_mut().now())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    #[test]
    fn an_imf_fixdate_reads_back_to_its_seconds() {
        for secs in [
            0,
            784_111_777,
            1_700_000_000,
            951_782_400,
            super::MAX_UNIX_SECS,
        ] {
            assert_eq!(
                super::parse_imf_fixdate(&super::imf_fixdate(secs)),
                Some(secs)
            );
        }
        assert_eq!(
            super::parse_imf_fixdate(b"Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(784_111_777)
        );
        for bad in [
            &b"Sunday, 06-Nov-94 08:49:37 GMT"[..],
            b"Sun Nov  6 08:49:37 1994",
            b"Sun, 06 Nov 1994 08:49:37 UTC",
            b"Sun, 06 Xyz 1994 08:49:37 GMT",
            b"Sun, 6 Nov 1994 08:49:37 GMT",
            b"",
        ] {
            assert_eq!(super::parse_imf_fixdate(bad), None);
        }
    }

    use super::*;

    fn fmt(secs: u64) -> String {
        String::from_utf8(imf_fixdate(secs).to_vec()).unwrap()
    }

    #[test]
    fn known_dates_are_formatted() {
        assert_eq!(fmt(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(fmt(784_111_777), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(fmt(951_782_400), "Tue, 29 Feb 2000 00:00:00 GMT");
        assert_eq!(fmt(1_709_164_799), "Wed, 28 Feb 2024 23:59:59 GMT");
        assert_eq!(fmt(1_709_164_800), "Thu, 29 Feb 2024 00:00:00 GMT");
        assert_eq!(fmt(4_107_542_400), "Mon, 01 Mar 2100 00:00:00 GMT");
        assert_eq!(fmt(u64::MAX), "Fri, 31 Dec 9999 23:59:59 GMT");
    }

    #[test]
    fn every_day_for_a_few_centuries_round_trips_through_the_calendar() {
        // Walk day by day and check the calendar advances one day at a time.
        let (mut y, mut m, mut d) = (1970u64, 1u64, 1u64);
        for days in 0..(200 * 366) {
            assert_eq!(civil_from_days(days), (y, m, d));
            let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
            let len = [
                31,
                if leap { 29 } else { 28 },
                31,
                30,
                31,
                30,
                31,
                31,
                30,
                31,
                30,
                31,
            ][(m - 1) as usize];
            d += 1;
            if d > len {
                d = 1;
                m += 1;
                if m > 12 {
                    m = 1;
                    y += 1;
                }
            }
        }
    }

    #[test]
    fn cache_reformats_only_when_the_second_changes() {
        let mut cache = DateCache::new();
        assert_eq!(cache.at(0), b"Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(cache.at(1), b"Thu, 01 Jan 1970 00:00:01 GMT");
        assert_eq!(now().len(), IMF_FIXDATE_LEN);
        assert!(now().ends_with(b" GMT"));
    }
}
