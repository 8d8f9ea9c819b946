//! The service's notion of "now", in milliseconds since the Unix epoch.
//!
//! Everything that compares against an expiry (sessions, access tokens, keys) asks this clock, so
//! a test can move time forward instead of sleeping. In production the offset is always zero.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch: how every timestamp is stored.
pub type Millis = i64;

#[derive(Clone)]
pub struct Clock {
    offset_ms: Arc<AtomicI64>,
    /// `RUNNING`, or the wall-clock reading this clock was stopped at (see `freeze_at`).
    frozen_at: Arc<AtomicI64>,
}

const RUNNING: i64 = i64::MIN;

impl Default for Clock {
    fn default() -> Clock {
        Clock {
            offset_ms: Arc::default(),
            frozen_at: Arc::new(AtomicI64::new(RUNNING)),
        }
    }
}

impl Clock {
    pub fn now(&self) -> Millis {
        let frozen = self.frozen_at.load(Ordering::Relaxed);
        let base = if frozen == RUNNING {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        } else {
            frozen
        };
        base + self.offset_ms.load(Ordering::Relaxed)
    }

    /// Stops this clock (and every clone of it) so that `now()` reads `at` until `advance` moves
    /// it. Meant for tests that compare exact durations, such as a `Retry-After`.
    pub fn freeze_at(&self, at: Millis) {
        let offset = self.offset_ms.load(Ordering::Relaxed);
        self.frozen_at.store(at - offset, Ordering::Relaxed);
    }

    /// Moves this clock (and every clone of it) forward. Meant for tests.
    pub fn advance(&self, by: Duration) {
        let ms = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        self.offset_ms.fetch_add(ms, Ordering::Relaxed);
    }
}

/// Formats a stored timestamp as RFC 3339 in UTC, with millisecond precision.
pub fn rfc3339(ms: Millis) -> String {
    // Always three fractional digits, so every timestamp of the API has one width.
    const FORMAT: &[time::format_description::BorrowedFormatItem<'_>] = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    let nanos = i128::from(ms) * 1_000_000;
    time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .and_then(|t| t.format(FORMAT).ok())
        .unwrap_or_default()
}

pub fn millis(d: Duration) -> Millis {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    #[test]
    fn timestamps_have_millisecond_precision_and_one_width() {
        assert_eq!(
            super::rfc3339(1_795_728_306_966),
            "2026-11-26T21:25:06.966Z"
        );
        assert_eq!(
            super::rfc3339(1_795_728_306_900),
            "2026-11-26T21:25:06.900Z"
        );
        assert_eq!(
            super::rfc3339(1_795_728_306_000),
            "2026-11-26T21:25:06.000Z"
        );
    }
}
