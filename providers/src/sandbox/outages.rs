//! Outage windows like `"10s..40s"`, counted from the first message the
//! process's sandboxes handled.

use std::time::Duration;

pub fn parse_window(s: &str) -> Result<(Duration, Duration), String> {
    let (from, to) = s.split_once("..").ok_or_else(|| format!("outage `{s}` is not like 10s..40s"))?;
    let parse = |p: &str| humantime::parse_duration(p.trim()).map_err(|e| format!("outage `{s}`: {e}"));
    let (from, to) = (parse(from)?, parse(to)?);
    if to <= from {
        return Err(format!("outage `{s}` ends before it starts"));
    }
    Ok((from, to))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_windows() {
        assert_eq!(parse_window("10s..1m").unwrap(), (Duration::from_secs(10), Duration::from_secs(60)));
        assert!(parse_window("40s..10s").is_err());
        assert!(parse_window("soon").is_err());
    }
}
