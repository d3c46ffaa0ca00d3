//! Timestamps as people and files write them.

/// `YYYY-MM-DD HH:MM:SS` (UTC) of epoch seconds `s`; `None` beyond the
/// calendar's range.
pub fn format_utc(s: i64) -> Option<String> {
    use time::{OffsetDateTime, macros::format_description};
    OffsetDateTime::from_unix_timestamp(s)
        .ok()?
        .format(format_description!(
            "[year]-[month]-[day] [hour]:[minute]:[second]"
        ))
        .ok()
}

/// Milliseconds since the epoch of `YYYY-MM-DD[ T]HH:MM[:SS[.fff]]` (UTC,
/// an optional `Z`), of an RFC 3339 time with its offset
/// (`2026-11-11T00:00:00+08:00`; also after a space, without its colon
/// or its minutes: `+0800`, `+08`), with a `YYYY/MM/DD` date, or ending
/// ` UTC` or ` GMT`, or of a plain number of epoch seconds
/// (below 10^11), milliseconds (below 10^14), microseconds (below 10^17)
/// or nanoseconds (as data frames write their time index). Calendar dates are checked by the `time`
/// crate: 2014-02-31 is no date.
pub fn parse_timestamp(s: &str) -> Option<i64> {
    use time::{
        OffsetDateTime, PrimitiveDateTime, format_description::well_known::Rfc3339,
        macros::format_description,
    };
    let s = s.trim();
    if let Ok(n) = s.parse::<i64>() {
        // Whole numbers exactly: a nanosecond count is beyond an f64's
        // 53 bits.
        let a = n.unsigned_abs();
        return Some(if a < 100_000_000_000 {
            n.checked_mul(1000)?
        } else if a < 100_000_000_000_000 {
            n
        } else if a < 100_000_000_000_000_000 {
            n / 1_000
        } else {
            n / 1_000_000
        });
    }
    if let Ok(n) = s.parse::<f64>() {
        if !n.is_finite() {
            return None;
        }
        // Seconds, milliseconds, microseconds or nanoseconds, by their
        // size (today is about 1.8e9 s, 1.8e12 ms, 1.8e15 µs, 1.8e18 ns).
        let a = n.abs();
        return Some(if a < 1e11 {
            n * 1000.0
        } else if a < 1e14 {
            n
        } else if a < 1e17 {
            n / 1e3
        } else {
            n / 1e6
        } as i64);
    }
    let ms = |t: OffsetDateTime| (t.unix_timestamp_nanos() / 1_000_000) as i64;
    if let Ok(t) = OffsetDateTime::parse(s, &Rfc3339) {
        return Some(ms(t));
    }
    // Go's `time.Time.String()`, as Go exporters write their times:
    // `2022-08-22 03:51:19.607158889 +0000 UTC m=+0.113112869` (the
    // monotonic reading and the zone's abbreviation dropped; the offset
    // tells).
    let go = s.split(" m=").next().unwrap_or(s);
    if let Some((t, zone)) = go.rsplit_once(' ')
        && zone.chars().all(|c| c.is_ascii_alphabetic())
        && let Some((t, off)) = t.rsplit_once(' ')
        && off.len() == 5
        && (off.starts_with('+') || off.starts_with('-'))
        && let Ok(t) = OffsetDateTime::parse(
            &format!("{}{}:{}", t.replacen(' ', "T", 1), &off[..3], &off[3..]),
            &Rfc3339,
        )
    {
        return Some(ms(t));
    }
    // What databases and scripts write besides: slashes in the date
    // (`2014/04/01`), an offset after a space, without its colon or its
    // minutes (`+0800`, PostgreSQL's `+00`), a trailing `UTC` or `GMT`.
    let s = s
        .strip_suffix(" UTC")
        .or_else(|| s.strip_suffix(" GMT"))
        .unwrap_or(s);
    let s = &slashed_date(s);
    if let Some((t, off)) = offset_of(s)
        && let Ok(t) = OffsetDateTime::parse(&format!("{}{off}", t.replacen(' ', "T", 1)), &Rfc3339)
    {
        return Some(ms(t));
    }
    let plain = s.strip_suffix('Z').unwrap_or(s).replacen('T', " ", 1);
    let formats = [
        format_description!("[year]-[month]-[day] [hour]:[minute]:[second].[subsecond]"),
        format_description!("[year]-[month]-[day] [hour]:[minute]:[second]"),
        format_description!("[year]-[month]-[day] [hour]:[minute]"),
    ];
    formats
        .iter()
        .find_map(|f| PrimitiveDateTime::parse(&plain, f).ok())
        .map(|t| ms(t.assume_utc()))
}

/// `s` with a `YYYY/MM/DD` date written `YYYY-MM-DD` (as it is, without
/// a copy, otherwise: replay reads a time per row).
fn slashed_date(s: &str) -> std::borrow::Cow<'_, str> {
    let b = s.as_bytes();
    if b.len() >= 10
        && b[4] == b'/'
        && b[7] == b'/'
        && b[..10]
            .iter()
            .enumerate()
            .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit())
    {
        format!("{}-{}-{}", &s[..4], &s[5..7], &s[8..]).into()
    } else {
        s.into()
    }
}

/// A time's trailing UTC offset, after its seconds or minutes (with a
/// space before it or none): `+08:00`, `+0800`, `+08`, `-05`; the time
/// without it and the offset as RFC 3339 writes it (`+08:00`).
fn offset_of(s: &str) -> Option<(&str, String)> {
    let at = s.rfind(['+', '-'])?;
    // The date's own dashes come before its time's first colon.
    if at < s.find(':')? {
        return None;
    }
    let (t, off) = s.split_at(at);
    let digits: String = off[1..].chars().filter(|c| *c != ':').collect();
    if !digits.bytes().all(|c| c.is_ascii_digit()) || !matches!(digits.len(), 2 | 4) {
        return None;
    }
    let mm = if digits.len() == 4 {
        &digits[2..]
    } else {
        "00"
    };
    Some((t.trim_end(), format!("{}{}:{mm}", &off[..1], &digits[..2])))
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
        // Go's time.String(), its monotonic reading dropped.
        assert_eq!(
            parse_timestamp("2022-08-22 03:51:19.607158889 +0000 UTC m=+0.113112869"),
            Some(1_661_140_279_607)
        );
        assert_eq!(
            parse_timestamp("2022-08-22 11:51:19 +0800 CST"),
            Some(1_661_140_279_000)
        );
        assert_eq!(parse_timestamp("1396310700"), Some(1_396_310_700_000));
        assert_eq!(
            parse_timestamp("2014-04-01 08:05:00+08:00".replacen(' ', "T", 1).as_str()),
            Some(1_396_310_700_000)
        );
        assert_eq!(
            parse_timestamp("2014-04-01 00:05:00.250"),
            Some(1_396_310_700_250)
        );
        assert_eq!(parse_timestamp("2016-02-29 00:00"), Some(1_456_704_000_000));
        // As databases and scripts write them: an offset after a space,
        // without its colon or its minutes; slashes; a zone's name.
        for s in [
            "2014-04-01 08:05:00 +08:00",
            "2014-04-01T08:05:00+0800",
            "2014-04-01 08:05:00+08",
            "2014-03-31 19:05:00-05",
            "2014/04/01 00:05:00",
            "2014-04-01 00:05:00 UTC",
            "2014/04/01 00:05:00 GMT",
            "2014-04-01 00:05:00+00",
        ] {
            assert_eq!(parse_timestamp(s), Some(1_396_310_700_000), "{s}");
        }
        assert_eq!(
            parse_timestamp("2014-04-01T08:05:00.250+0800"),
            Some(1_396_310_700_250)
        );
        assert_eq!(parse_timestamp("1396310700000"), Some(1_396_310_700_000));
        assert_eq!(parse_timestamp("1396310700.25"), Some(1_396_310_700_250));
        assert_eq!(
            parse_timestamp("1396310700250000"),
            Some(1_396_310_700_250),
            "microseconds"
        );
        assert_eq!(
            parse_timestamp("1396310700250000000"),
            Some(1_396_310_700_250),
            "nanoseconds"
        );
        for bad in [
            "",
            "yesterday",
            "2014-13-01 00:00:00",
            "2014-01-01 25:00:00",
            "NaN",
            "2014-01-01",
            "2014-02-31 00:00:00",
            "2015-02-29 12:00",
            "2014-04-01 00:05:00 trailing",
            // Day and month in an order no one can tell.
            "01/04/2014 08:05",
            "2014-04-01 08:05:00+8",
            "2014-04-01 08:05:00+123",
        ] {
            assert_eq!(parse_timestamp(bad), None, "{bad}");
        }
    }
}
