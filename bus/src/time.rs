//! Timestamps as people and files write them.

/// Milliseconds since the epoch of `YYYY-MM-DD[ T]HH:MM[:SS[.fff]]` (UTC),
/// or of a plain number of epoch seconds (below 10^11) or milliseconds.
pub fn parse_timestamp(s: &str) -> Option<i64> {
    if let Ok(n) = s.parse::<f64>() {
        if !n.is_finite() {
            return None;
        }
        return Some(if n.abs() < 1e11 { n * 1000.0 } else { n } as i64);
    }
    let (date, time) = s.split_once([' ', 'T'])?;
    let mut d = date.splitn(3, '-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) {
        return None;
    }
    let time = time.trim_end_matches('Z');
    let mut t = time.splitn(3, ':');
    let hh: i64 = t.next()?.parse().ok()?;
    let mm: i64 = t.next()?.parse().ok()?;
    let ss: f64 = t.next().map_or(Some(0.0), |x| x.parse().ok())?;
    if !(0..24).contains(&hh) || !(0..60).contains(&mm) || !(0.0..61.0).contains(&ss) {
        return None;
    }
    // Days from the civil date (H. Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some((days * 86_400 + hh * 3600 + mm * 60) * 1000 + (ss * 1000.0).round() as i64)
}

#[cfg(test)]
mod tests {
    use super::parse_timestamp;

    #[test]
    fn dates_and_epochs() {
        assert_eq!(parse_timestamp("1970-01-01 00:00:00"), Some(0));
        assert_eq!(
            parse_timestamp("2014-04-01 00:05:00"),
            Some(1_396_310_700_000)
        );
        assert_eq!(
            parse_timestamp("2014-04-01T00:05:00Z"),
            Some(1_396_310_700_000)
        );
        assert_eq!(parse_timestamp("2026-11-11 08:30"), Some(1_794_385_800_000));
        assert_eq!(parse_timestamp("1396310700"), Some(1_396_310_700_000));
        assert_eq!(parse_timestamp("1396310700000"), Some(1_396_310_700_000));
        for bad in [
            "",
            "yesterday",
            "2014-13-01 00:00:00",
            "2014-01-01 25:00:00",
            "NaN",
            "2014-01-01",
        ] {
            assert_eq!(parse_timestamp(bad), None, "{bad}");
        }
    }
}
