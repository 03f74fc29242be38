//! Cron schedules as CronJobs read them (upstream uses robfig/cron's standard parser): five
//! fields — minute, hour, day of month, month, day of week — with `*`, `?`, lists, ranges,
//! steps and month/weekday names; the macros `@yearly` (`@annually`), `@monthly`, `@weekly`,
//! `@daily` (`@midnight`), `@hourly` and `@every <duration>`. When both day fields are
//! restricted a day matching either runs (cron's classic rule). Times are evaluated on the
//! wall clock of a time zone: a time skipped by a DST change does not run.

use std::time::Duration;

use jiff::civil::DateTime;
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};

/// A parsed schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Schedule {
    /// Field-based.
    Fields(Fields),
    /// `@every <duration>`.
    Every(Duration),
}

/// The five fields as bit sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fields {
    minutes: u64,
    hours: u32,
    days: u32,
    months: u16,
    weekdays: u8,
    days_star: bool,
    weekdays_star: bool,
}

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const WEEKDAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

fn parse_value(s: &str, names: &[&str], offset: u32) -> Result<u32, String> {
    if let Some(i) = names.iter().position(|n| n.eq_ignore_ascii_case(s)) {
        return Ok(i as u32 + offset);
    }
    s.parse::<u32>()
        .map_err(|_| format!("failed to parse int from {s}"))
}

/// Parse one field into a bit set over `min..=max`; returns (bits, starred).
fn parse_field(
    field: &str,
    min: u32,
    max: u32,
    names: &[&str],
    offset: u32,
) -> Result<(u64, bool), String> {
    let mut bits = 0u64;
    let mut star = false;
    for part in field.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => {
                let step: u32 = s
                    .parse()
                    .map_err(|_| format!("failed to parse int from {s}"))?;
                if step == 0 {
                    return Err(format!("step of range should be a positive number: {part}"));
                }
                (r, Some(step))
            }
            None => (part, None),
        };
        let (lo, hi) = if range == "*" || range == "?" {
            if step.is_none() {
                star = true;
            }
            (min, max)
        } else if let Some((a, b)) = range.split_once('-') {
            (
                parse_value(a, names, offset)?,
                parse_value(b, names, offset)?,
            )
        } else {
            let v = parse_value(range, names, offset)?;
            // `n/step` means n through the maximum.
            (v, if step.is_some() { max } else { v })
        };
        if lo < min {
            return Err(format!(
                "beginning of range ({lo}) below minimum ({min}): {part}"
            ));
        }
        if hi > max {
            return Err(format!("end of range ({hi}) above maximum ({max}): {part}"));
        }
        if lo > hi {
            return Err(format!(
                "beginning of range ({lo}) beyond end of range ({hi}): {part}"
            ));
        }
        let step = step.unwrap_or(1);
        let mut v = lo;
        while v <= hi {
            bits |= 1 << v;
            v += step;
        }
    }
    Ok((bits, star))
}

impl std::str::FromStr for Schedule {
    type Err = String;

    fn from_str(spec: &str) -> Result<Self, String> {
        let spec = spec.trim();
        if spec.is_empty() {
            return Err("empty spec string".into());
        }
        if spec.starts_with("TZ=") || spec.starts_with("CRON_TZ=") {
            return Err("time zones in the schedule are not supported; use spec.timeZone".into());
        }
        let expanded = match spec {
            "@yearly" | "@annually" => "0 0 1 1 *",
            "@monthly" => "0 0 1 * *",
            "@weekly" => "0 0 * * 0",
            "@daily" | "@midnight" => "0 0 * * *",
            "@hourly" => "0 * * * *",
            other if other.starts_with("@every ") => {
                let d = skiff_api::duration::parse_go(other.trim_start_matches("@every ").trim())?;
                if d < Duration::from_secs(1) {
                    return Err("@every duration must be at least one second".into());
                }
                return Ok(Schedule::Every(d));
            }
            other if other.starts_with('@') => {
                return Err(format!("unrecognized descriptor: {other}"));
            }
            other => other,
        };
        let fields: Vec<&str> = expanded.split_whitespace().collect();
        if fields.len() != 5 {
            return Err(format!(
                "expected exactly 5 fields, found {}: {spec}",
                fields.len()
            ));
        }
        let (minutes, _) = parse_field(fields[0], 0, 59, &[], 0)?;
        let (hours, _) = parse_field(fields[1], 0, 23, &[], 0)?;
        let (days, days_star) = parse_field(fields[2], 1, 31, &[], 0)?;
        let (months, _) = parse_field(fields[3], 1, 12, &MONTHS, 1)?;
        let (weekdays, weekdays_star) = parse_field(fields[4], 0, 6, &WEEKDAYS, 0)?;
        Ok(Schedule::Fields(Fields {
            minutes,
            hours: hours as u32,
            days: days as u32,
            months: months as u16,
            weekdays: weekdays as u8,
            days_star,
            weekdays_star,
        }))
    }
}

impl Fields {
    fn day_matches(&self, dt: DateTime) -> bool {
        let dom = self.days & (1 << dt.day()) != 0;
        let dow = self.weekdays & (1 << dt.weekday().to_sunday_zero_offset()) != 0;
        if self.days_star || self.weekdays_star {
            dom && dow
        } else {
            dom || dow
        }
    }
}

impl Schedule {
    /// The first activation strictly after `after`, on the wall clock of `tz`.
    pub fn next_after(&self, after: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        let f = match self {
            Schedule::Every(d) => {
                // robfig rounds the result down to the second.
                let next = after.checked_add(*d).ok()?;
                return Timestamp::from_second(next.as_second()).ok();
            }
            Schedule::Fields(f) => f,
        };
        let start = tz.to_datetime(after);
        let mut dt = start.round(jiff::Unit::Minute).ok()?;
        if dt <= start {
            dt = dt.checked_add(1.minute()).ok()?;
        }
        dt = dt.with().second(0).subsec_nanosecond(0).build().ok()?;
        let limit = start.checked_add(5.years()).ok()?;
        while dt < limit {
            if f.months & (1 << dt.month()) == 0 {
                let first = dt.with().day(1).hour(0).minute(0).build().ok()?;
                dt = first.checked_add(1.month()).ok()?;
                continue;
            }
            if !f.day_matches(dt) {
                dt = dt
                    .with()
                    .hour(0)
                    .minute(0)
                    .build()
                    .ok()?
                    .checked_add(1.day())
                    .ok()?;
                continue;
            }
            if f.hours & (1 << dt.hour()) == 0 {
                dt = dt
                    .with()
                    .minute(0)
                    .build()
                    .ok()?
                    .checked_add(1.hour())
                    .ok()?;
                continue;
            }
            if f.minutes & (1 << dt.minute()) == 0 {
                dt = dt.checked_add(1.minute()).ok()?;
                continue;
            }
            // Map the wall-clock time into the zone; a time in a DST gap does not exist.
            let zoned = tz.to_ambiguous_zoned(dt).compatible().ok()?;
            if zoned.datetime() == dt && zoned.timestamp() > after {
                return Some(zoned.timestamp());
            }
            dt = dt.checked_add(1.minute()).ok()?;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn next(spec: &str, after: &str) -> String {
        let s: Schedule = spec.parse().unwrap();
        s.next_after(ts(after), &TimeZone::UTC).unwrap().to_string()
    }

    #[test]
    fn fields_ranges_steps_and_names() {
        assert_eq!(
            next("*/15 * * * *", "2024-01-01T00:07:00Z"),
            "2024-01-01T00:15:00Z"
        );
        assert_eq!(
            next("0 9-17/4 * * MON-FRI", "2024-01-06T10:00:00Z"),
            "2024-01-08T09:00:00Z"
        );
        assert_eq!(
            next("30 2 * feb *", "2024-03-01T00:00:00Z"),
            "2025-02-01T02:30:00Z"
        );
        assert_eq!(
            next("* * * * *", "2024-01-01T00:00:30Z"),
            "2024-01-01T00:01:00Z"
        );
        assert_eq!(
            next("5 * * * *", "2024-01-01T00:05:00Z"),
            "2024-01-01T01:05:00Z"
        );
    }

    #[test]
    fn macros_and_every() {
        assert_eq!(
            next("@hourly", "2024-01-01T00:00:00Z"),
            "2024-01-01T01:00:00Z"
        );
        assert_eq!(
            next("@daily", "2024-01-01T12:00:00Z"),
            "2024-01-02T00:00:00Z"
        );
        assert_eq!(
            next("@weekly", "2024-01-01T12:00:00Z"),
            "2024-01-07T00:00:00Z"
        );
        assert_eq!(
            next("@yearly", "2024-06-01T00:00:00Z"),
            "2025-01-01T00:00:00Z"
        );
        assert_eq!(
            next("@every 90s", "2024-01-01T00:00:00Z"),
            "2024-01-01T00:01:30Z"
        );
    }

    #[test]
    fn restricted_day_fields_match_either() {
        // The 13th, or any Friday.
        assert_eq!(
            next("0 0 13 * 5", "2024-01-01T00:00:00Z"),
            "2024-01-05T00:00:00Z"
        );
        assert_eq!(
            next("0 0 13 * 5", "2024-01-12T00:00:00Z"),
            "2024-01-13T00:00:00Z"
        );
        // A starred weekday field means "every day the day-of-month allows".
        assert_eq!(
            next("0 0 31 * *", "2024-04-01T00:00:00Z"),
            "2024-05-31T00:00:00Z"
        );
    }

    #[test]
    fn time_zones_and_dst_gaps() {
        let berlin = TimeZone::get("Europe/Berlin").unwrap();
        let s: Schedule = "30 2 * * *".parse().unwrap();
        // 2024-03-31 02:30 does not exist in Berlin (clocks jump 02:00 → 03:00).
        let got = s.next_after(ts("2024-03-30T12:00:00Z"), &berlin).unwrap();
        assert_eq!(got.to_string(), "2024-04-01T00:30:00Z");
        let s: Schedule = "0 9 * * *".parse().unwrap();
        assert_eq!(
            s.next_after(ts("2024-01-01T00:00:00Z"), &berlin)
                .unwrap()
                .to_string(),
            "2024-01-01T08:00:00Z"
        );
    }

    #[test]
    fn bad_schedules_are_explained() {
        for bad in [
            "",
            "* * * *",
            "61 * * * *",
            "* * * * 7",
            "*/0 * * * *",
            "@fortnightly",
            "TZ=UTC * * * * *",
            "5-1 * * * *",
        ] {
            assert!(bad.parse::<Schedule>().is_err(), "{bad:?} parsed");
        }
    }
}
