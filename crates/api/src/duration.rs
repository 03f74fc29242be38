//! Go's duration syntax (`1h30m`, `90s`, `1.5m`, `300ms`), as Kubernetes flags and fields
//! write durations (`--eviction-pressure-transition-period=5m0s`, cron `@every 1h`).

use std::time::Duration;

/// Parse a Go duration (`time.ParseDuration`): `0`, or one or more `<number><unit>` with
/// units `ns`, `us` (`µs`), `ms`, `s`, `m`, `h`; signs and bare numbers are refused.
pub fn parse_go(s: &str) -> Result<Duration, String> {
    let bad = || format!("invalid duration {s:?} (expected e.g. 90s, 5m, 1h30m, 500ms)");
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err(bad());
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let value: f64 = rest[..number_len].parse().map_err(|_| bad())?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        total += value
            * match &rest[..unit_len] {
                "ns" => 1e-9,
                "us" | "µs" => 1e-6,
                "ms" => 1e-3,
                "s" => 1.0,
                "m" => 60.0,
                "h" => 3600.0,
                _ => return Err(bad()),
            };
        rest = &rest[unit_len..];
    }
    Ok(Duration::from_secs_f64(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_parse_and_others_are_refused() {
        assert_eq!(parse_go("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_go("5m0s"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_go("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_go("1.5m"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_go("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_go("1.5h"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_go("1500us"), Ok(Duration::from_micros(1500)));
        assert_eq!(parse_go("0"), Ok(Duration::ZERO));
        for bad in ["", "5", "-5m", "5d", "5x", "m", "1h 30m"] {
            assert!(parse_go(bad).is_err(), "{bad:?}");
        }
    }
}
