//! Log lines on stderr: `2026-11-25T22:30:56.123Z INFO target: message`. The level comes from
//! `RAILPROXY_LOG` (env_logger syntax, e.g. `info,access=off`), default `info`.

use std::io::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

pub fn init() {
    let mut builder = env_logger::Builder::new();
    builder.parse_filters(&std::env::var("RAILPROXY_LOG").unwrap_or_else(|_| "info".into()));
    builder.format(|buf, record| {
        writeln!(buf, "{} {:<5} {}: {}", utc_now(), record.level(), record.target(), record.args())
    });
    let _ = builder.try_init();
}

/// The current time as RFC 3339 UTC with milliseconds.
fn utc_now() -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = now.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z", rem / 3600, rem % 3600 / 60, rem % 60, now.subsec_millis())
}

/// Days since 1970-01-01 to a proleptic Gregorian date (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::civil_from_days;

    #[test]
    fn dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(20_782), (2026, 11, 25));
    }
}
