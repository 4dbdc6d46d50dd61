//! Durations written with units in TOML: `"500ms"`, `"10s"`, `"2m"`, `"1h"`,
//! `"1.5s"`. A bare number, a negative value or an unknown unit is an error.
//!
//! Decisions where DESIGN.md is silent:
//! - Units are `us`, `ms`, `s`, `m`, `h`, lower case only; one number, one
//!   unit, no sign, no spaces, no exponent. `"0s"` is a valid duration (a
//!   setting that must be positive says so itself).
//! - A fraction must land on a whole nanosecond (`"1.5ns"`-like precision
//!   loss is refused rather than rounded); `.5s` and `1.s` are refused.
//! - In TOML a duration is always a string: an integer or float is refused
//!   with a message saying how to write it, since `10` could mean seconds or
//!   milliseconds depending on who reads it.

use std::fmt;
use std::time::Duration;

const NS_PER_US: u128 = 1_000;
const NS_PER_MS: u128 = 1_000_000;
const NS_PER_S: u128 = 1_000_000_000;
const NS_PER_M: u128 = 60 * NS_PER_S;
const NS_PER_H: u128 = 3600 * NS_PER_S;

/// Units with their length in nanoseconds, in the order `format` prefers
/// them when two renderings are equally short (`1.25ms` over `1250us`).
const UNITS: [(&str, u128); 5] = [
    ("s", NS_PER_S),
    ("ms", NS_PER_MS),
    ("us", NS_PER_US),
    ("m", NS_PER_M),
    ("h", NS_PER_H),
];

/// Parses `"500ms"`, `"10s"`, `"1.5s"`, `"2m"`, `"1h"`, `"250us"`.
pub fn parse(s: &str) -> Result<Duration, String> {
    if s.is_empty() {
        return Err("empty duration (write e.g. \"10s\")".into());
    }
    if s.starts_with('-') {
        return Err(format!(
            "{s:?} is negative; a duration is written without a sign, e.g. \"10s\""
        ));
    }
    if s.starts_with('+') {
        return Err(format!(
            "{s:?}: a duration is written without a sign, e.g. \"10s\""
        ));
    }
    if s.chars().any(char::is_whitespace) {
        return Err(format!(
            "{s:?} contains a space; write the number and unit together, e.g. \"10s\""
        ));
    }
    let number_len = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(number_len);
    if number.is_empty() {
        return Err(format!("{s:?} is not a duration (write e.g. \"10s\")"));
    }
    if unit.is_empty() {
        return Err(format!("{s:?} has no unit (write e.g. \"{number}s\")"));
    }
    let unit_ns = match UNITS.iter().find(|(name, _)| *name == unit) {
        Some(&(_, ns)) => ns,
        None => {
            return Err(format!(
                "{s:?} has an unknown unit {unit:?} (use us, ms, s, m or h)"
            ))
        }
    };
    let (int, frac) = number.split_once('.').unwrap_or((number, ""));
    if int.is_empty() || (number.contains('.') && frac.is_empty()) || frac.contains('.') {
        return Err(format!(
            "{s:?} is not a duration: malformed number {number:?} (write e.g. \"1.5s\")"
        ));
    }
    let too_large = || format!("{s:?} is too large");
    // Digits beyond these lengths overflow long before u128 arithmetic does.
    if int.trim_start_matches('0').len() > 20 || frac.len() > 18 {
        return Err(if frac.len() > 18 {
            format!("{s:?} has too many decimals")
        } else {
            too_large()
        });
    }
    let int: u128 = int.parse().map_err(|_| too_large())?;
    let frac_scale = 10u128.pow(frac.len() as u32);
    let frac_value: u128 = if frac.is_empty() {
        0
    } else {
        frac.parse().map_err(|_| too_large())?
    };
    let frac_ns = frac_value * unit_ns / frac_scale;
    if frac_ns * frac_scale != frac_value * unit_ns {
        return Err(format!("{s:?} is finer than a nanosecond"));
    }
    let nanos = int
        .checked_mul(unit_ns)
        .and_then(|n| n.checked_add(frac_ns))
        .ok_or_else(too_large)?;
    let secs = u64::try_from(nanos / NS_PER_S).map_err(|_| too_large())?;
    Ok(Duration::new(secs, (nanos % NS_PER_S) as u32))
}

/// Formats like the input syntax, shortest exact form: `500ms`, `10s`, `1.5s`.
/// A unit the value is below 1 of (`0.5s`) is used only below a microsecond.
pub fn format(d: Duration) -> String {
    let nanos = d.as_nanos();
    if nanos == 0 {
        return "0s".into();
    }
    UNITS
        .iter()
        .filter(|&&(name, unit_ns)| nanos >= unit_ns || name == "us")
        .filter_map(|&(name, unit_ns)| in_unit(nanos, unit_ns).map(|n| n + name))
        .reduce(|best, s| if s.len() < best.len() { s } else { best })
        .expect("every duration is exact in microseconds with up to three decimals")
}

/// `nanos / unit_ns` as a terminating decimal, or `None` if it does not
/// terminate (e.g. 20 s in minutes).
fn in_unit(nanos: u128, unit_ns: u128) -> Option<String> {
    let mut out = (nanos / unit_ns).to_string();
    let mut rem = nanos % unit_ns;
    if rem != 0 {
        out.push('.');
        // unit_ns divides 36 * 10^11, so at most 12 decimals ever terminate.
        for _ in 0..13 {
            rem *= 10;
            out.push(char::from(b'0' + (rem / unit_ns) as u8));
            rem %= unit_ns;
            if rem == 0 {
                return Some(out);
            }
        }
        return None;
    }
    Some(out)
}

/// For `#[serde(deserialize_with = "tether_common::duration::deserialize")]`.
pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    d.deserialize_any(DurationVisitor)
}

/// For `Option<Duration>` fields with `#[serde(default, deserialize_with = ...)]`.
pub fn deserialize_opt<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Duration>, D::Error> {
    deserialize(d).map(Some)
}

/// For maps of durations, e.g. `[timing.stale_timeout_by_layer]`.
pub fn deserialize_map<'de, D, K>(d: D) -> Result<std::collections::BTreeMap<K, Duration>, D::Error>
where
    D: serde::Deserializer<'de>,
    K: serde::Deserialize<'de> + Ord,
{
    #[derive(serde::Deserialize)]
    struct Wrapped(#[serde(deserialize_with = "deserialize")] Duration);
    let map: std::collections::BTreeMap<K, Wrapped> = serde::Deserialize::deserialize(d)?;
    Ok(map.into_iter().map(|(k, Wrapped(v))| (k, v)).collect())
}

struct DurationVisitor;

impl DurationVisitor {
    fn number<E: serde::de::Error>(shown: impl fmt::Display) -> E {
        E::custom(format_args!(
            "a duration must be a string with a unit, e.g. \"{shown}s\" or \"{shown}ms\", not the bare number {shown}"
        ))
    }
}

impl serde::de::Visitor<'_> for DurationVisitor {
    type Value = Duration;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a duration string with a unit, e.g. \"10s\"")
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Duration, E> {
        parse(v).map_err(E::custom)
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Duration, E> {
        Err(Self::number(v))
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Duration, E> {
        Err(Self::number(v))
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Duration, E> {
        Err(Self::number(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn parses_every_unit_and_fractions() {
        assert_eq!(parse("500ms"), Ok(ms(500)));
        assert_eq!(parse("10s"), Ok(ms(10_000)));
        assert_eq!(parse("1.5s"), Ok(ms(1_500)));
        assert_eq!(parse("2m"), Ok(ms(120_000)));
        assert_eq!(parse("1h"), Ok(ms(3_600_000)));
        assert_eq!(parse("250us"), Ok(Duration::from_micros(250)));
        assert_eq!(parse("0.25ms"), Ok(Duration::from_micros(250)));
        assert_eq!(parse("0.001us"), Ok(Duration::from_nanos(1)));
        assert_eq!(parse("0s"), Ok(Duration::ZERO));
        assert_eq!(parse("010s"), Ok(ms(10_000)));
    }

    #[test]
    fn refuses_malformed_input_with_a_reason() {
        let cases = [
            ("", "empty"),
            ("10", "\"10\" has no unit (write e.g. \"10s\")"),
            ("1.5", "has no unit"),
            ("-1s", "negative"),
            ("+1s", "without a sign"),
            ("10 s", "space"),
            (" 10s", "space"),
            ("10x", "unknown unit \"x\""),
            ("10S", "unknown unit"),
            ("10sec", "unknown unit"),
            ("s", "not a duration"),
            (".5s", "malformed"),
            ("1.s", "malformed"),
            ("1.2.3s", "malformed"),
            ("0.0001us", "finer than a nanosecond"),
            ("99999999999999999999h", "too large"),
            ("18446744073709551616s", "too large"),
            ("1e3s", "unknown unit"),
        ];
        for (input, want) in cases {
            let err = parse(input).expect_err(input);
            assert!(err.contains(want), "{input:?}: {err:?} lacks {want:?}");
        }
    }

    #[test]
    fn largest_duration_parses_and_one_more_second_overflows() {
        assert_eq!(
            parse("18446744073709551615s"),
            Ok(Duration::from_secs(u64::MAX))
        );
        assert!(parse("18446744073709551615.5s").is_ok());
        assert!(parse("5124095576030432h")
            .unwrap_err()
            .contains("too large"));
    }

    #[test]
    fn formats_in_the_shortest_exact_form() {
        assert_eq!(format(Duration::ZERO), "0s");
        assert_eq!(format(ms(500)), "500ms");
        assert_eq!(format(ms(10_000)), "10s");
        assert_eq!(format(ms(1_500)), "1.5s");
        assert_eq!(format(ms(90_000)), "90s");
        assert_eq!(format(ms(120_000)), "2m");
        assert_eq!(format(ms(3_600_000)), "1h");
        assert_eq!(format(ms(5_400_000)), "90m");
        assert_eq!(format(Duration::from_micros(250)), "250us");
        assert_eq!(format(Duration::from_micros(1_250)), "1.25ms");
        assert_eq!(format(Duration::from_nanos(1_250_001)), "1.250001ms");
        assert_eq!(format(Duration::from_nanos(1)), "0.001us");
        assert_eq!(format(ms(20_000)), "20s");
    }

    #[test]
    fn format_then_parse_round_trips() {
        let samples = [
            0,
            1,
            999,
            1_000,
            1_500_000,
            250_000_000,
            1_000_000_000,
            20_000_000_000,
            5_400_000_000_000,
            86_400_123_456_789,
        ];
        for n in samples {
            let d = Duration::from_nanos(n);
            assert_eq!(parse(&format(d)), Ok(d), "{}", format(d));
        }
        assert_eq!(parse(&format(Duration::MAX)), Ok(Duration::MAX));
        for s in ["500ms", "10s", "1.5s", "2m", "1h", "250us"] {
            assert_eq!(format(parse(s).unwrap()), s);
        }
    }
}
