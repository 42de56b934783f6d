//! Time: a clock that tests can drive, RFC 3339 text, protobuf timestamps, and
//! the hour windows and monthly periods billing works in.

use crate::error::{Error, Result};
use chrono::{DateTime, Datelike, Duration, SecondsFormat, TimeZone, Timelike, Utc};
use std::sync::{Arc, Mutex};

/// A source of the current time.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Now, in UTC.
    fn now(&self) -> DateTime<Utc>;
}

/// A clock shared between components.
pub type SharedClock = Arc<dyn Clock>;

/// The machine's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// The system clock as a [`SharedClock`].
pub fn system_clock() -> SharedClock {
    Arc::new(SystemClock)
}

/// A clock that only moves when told to, for deterministic tests.
#[derive(Debug, Clone)]
pub struct ManualClock {
    now: Arc<Mutex<DateTime<Utc>>>,
}

impl ManualClock {
    /// A clock stopped at `start`.
    pub fn new(start: DateTime<Utc>) -> Self {
        Self {
            now: Arc::new(Mutex::new(start)),
        }
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        let mut now = self
            .now
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *now += by;
    }

    /// Sets the clock.
    pub fn set(&self, to: DateTime<Utc>) {
        *self
            .now
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = to;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self
            .now
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// RFC 3339 with milliseconds and `Z`, as marketplaces send and expect.
pub fn to_rfc3339(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Parses RFC 3339 text; `field` names the input in the error.
pub fn parse_rfc3339(field: &str, text: &str) -> Result<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text.trim())
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| Error::invalid_field(field, format!("`{text}` is not an RFC 3339 time")))
}

/// A protobuf timestamp.
pub fn to_timestamp(time: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: time.timestamp(),
        nanos: time.timestamp_subsec_nanos() as i32,
    }
}

/// From a protobuf timestamp; `field` names the input in the error.
pub fn from_timestamp(field: &str, timestamp: &prost_types::Timestamp) -> Result<DateTime<Utc>> {
    Utc.timestamp_opt(timestamp.seconds, timestamp.nanos.max(0) as u32)
        .single()
        .ok_or_else(|| Error::invalid_field(field, "is not a valid timestamp"))
}

/// From an optional protobuf timestamp.
pub fn from_optional_timestamp(
    field: &str,
    timestamp: Option<&prost_types::Timestamp>,
) -> Result<Option<DateTime<Utc>>> {
    timestamp.map(|t| from_timestamp(field, t)).transpose()
}

/// From epoch milliseconds (Vercel webhook `createdAt`).
pub fn from_epoch_millis(millis: i64) -> Option<DateTime<Utc>> {
    Utc.timestamp_millis_opt(millis).single()
}

/// The start of the hour containing `time`.
pub fn hour_floor(time: DateTime<Utc>) -> DateTime<Utc> {
    time.with_minute(0)
        .and_then(|t| t.with_second(0))
        .and_then(|t| t.with_nanosecond(0))
        .unwrap_or(time)
}

/// The monthly billing period containing `time`: from the first of the month
/// at 00:00 UTC to the first of the next month.
pub fn billing_period(time: DateTime<Utc>) -> (DateTime<Utc>, DateTime<Utc>) {
    let start = Utc
        .with_ymd_and_hms(time.year(), time.month(), 1, 0, 0, 0)
        .single()
        .unwrap_or(time);
    let (year, month) = if time.month() == 12 {
        (time.year() + 1, 1)
    } else {
        (time.year(), time.month() + 1)
    };
    let end = Utc
        .with_ymd_and_hms(year, month, 1, 0, 0, 0)
        .single()
        .unwrap_or(start + Duration::days(31));
    (start, end)
}

/// The time zone of Google Cloud Marketplace's month-end cutoff: US and
/// Canadian Pacific time.
pub const PACIFIC: chrono_tz::Tz = chrono_tz::America::Los_Angeles;

/// The first instant of the Pacific month after the one containing `time`
/// (midnight Pacific on the 1st, 07:00 or 08:00 UTC). Midnight exists on every
/// 1st: Pacific daylight saving changes at 02:00.
pub fn pacific_month_end(time: DateTime<Utc>) -> DateTime<Utc> {
    let local = time.with_timezone(&PACIFIC);
    let (year, month) = if local.month() == 12 {
        (local.year() + 1, 1)
    } else {
        (local.year(), local.month() + 1)
    };
    PACIFIC
        .with_ymd_and_hms(year, month, 1, 0, 0, 0)
        .earliest()
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or(time + Duration::days(31))
}

/// Google's month-end cutoff for usage of the Pacific month containing
/// `time`: 01:00 Pacific on the 1st of the next month (the earlier 01:00 when
/// daylight saving ends that night).
pub fn pacific_month_cutoff(time: DateTime<Utc>) -> DateTime<Utc> {
    let end = pacific_month_end(time).with_timezone(&PACIFIC);
    PACIFIC
        .with_ymd_and_hms(end.year(), end.month(), 1, 1, 0, 0)
        .earliest()
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or(end.with_timezone(&Utc) + Duration::hours(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_and_hours() {
        let t = parse_rfc3339("t", "2026-12-31T23:59:59.5Z").unwrap();
        assert_eq!(to_rfc3339(hour_floor(t)), "2026-12-31T23:00:00.000Z");
        let (start, end) = billing_period(t);
        assert_eq!(to_rfc3339(start), "2026-12-01T00:00:00.000Z");
        assert_eq!(to_rfc3339(end), "2027-01-01T00:00:00.000Z");
    }

    #[test]
    fn timestamps_round_trip() {
        let t = parse_rfc3339("t", "2026-11-23T10:11:12.345678Z").unwrap();
        assert_eq!(from_timestamp("t", &to_timestamp(t)).unwrap(), t);
        assert!(parse_rfc3339("t", "yesterday").is_err());
    }

    #[test]
    fn pacific_months_end_at_local_midnight_through_daylight_saving() {
        let at = |text: &str| parse_rfc3339("t", text).unwrap();
        let end = |text: &str| to_rfc3339(pacific_month_end(at(text)));
        let cutoff = |text: &str| to_rfc3339(pacific_month_cutoff(at(text)));
        // Summer (PDT, UTC-7).
        assert_eq!(end("2026-06-15T12:00:00Z"), "2026-07-01T07:00:00.000Z");
        // Winter (PST, UTC-8), across the year.
        assert_eq!(end("2026-12-31T23:00:00Z"), "2027-01-01T08:00:00.000Z");
        assert_eq!(cutoff("2026-12-31T23:00:00Z"), "2027-01-01T09:00:00.000Z");
        // Still December in Pacific time until 08:00 UTC on January 1st.
        assert_eq!(end("2027-01-01T07:59:59Z"), "2027-01-01T08:00:00.000Z");
        assert_eq!(end("2027-01-01T08:00:00Z"), "2027-02-01T08:00:00.000Z");
        // February (PST) into March: daylight saving starts on March 8th.
        assert_eq!(end("2026-02-28T22:00:00Z"), "2026-03-01T08:00:00.000Z");
        assert_eq!(end("2026-03-10T00:00:00Z"), "2026-04-01T07:00:00.000Z");
        // October into November 1st 2026, the night daylight saving ends:
        // midnight is still PDT; 01:00 happens twice, the first one counts.
        assert_eq!(end("2026-10-31T20:00:00Z"), "2026-11-01T07:00:00.000Z");
        assert_eq!(cutoff("2026-10-31T20:00:00Z"), "2026-11-01T08:00:00.000Z");
        // September usage is due by October 1st, 1 AM PT.
        assert_eq!(cutoff("2026-09-30T23:30:00Z"), "2026-10-01T08:00:00.000Z");
    }

    #[test]
    fn manual_clock_moves_only_when_told() {
        let start = parse_rfc3339("t", "2026-01-01T00:00:00Z").unwrap();
        let clock = ManualClock::new(start);
        assert_eq!(clock.now(), start);
        clock.advance(Duration::hours(2));
        assert_eq!(clock.now(), start + Duration::hours(2));
    }
}
