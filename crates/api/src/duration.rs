//! Go's duration syntax (`1h30m`, `90s`, `1.5m`, `300ms`), as Kubernetes flags and fields
//! write durations (`--eviction-pressure-transition-period=5m0s`, cron `@every 1h`).

use std::time::Duration;

/// Parse a Go duration: one or more `<number><unit>` with units `ms`, `s`, `m`, `h`; negative
/// durations and bare numbers are refused.
pub fn parse_go(s: &str) -> Result<Duration, String> {
    let bad = || format!("invalid duration {s:?} (expected e.g. 90s, 5m, 1h30m)");
    let mut total = 0f64;
    let mut rest = s;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let n = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let value: f64 = rest[..n].parse().map_err(|_| bad())?;
        rest = &rest[n..];
        let u = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        total += value
            * match &rest[..u] {
                "ms" => 1e-3,
                "s" => 1.0,
                "m" => 60.0,
                "h" => 3600.0,
                _ => return Err(bad()),
            };
        rest = &rest[u..];
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
        for bad in ["", "5", "-5m", "5d", "m", "1h 30m"] {
            assert!(parse_go(bad).is_err(), "{bad:?}");
        }
    }
}
