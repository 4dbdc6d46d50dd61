//! Durations written with units in TOML: `"500ms"`, `"10s"`, `"2m"`, `"1h"`,
//! `"1.5s"`. A bare number, a negative value or an unknown unit is an error.

use std::time::Duration;

/// Parses `"500ms"`, `"10s"`, `"1.5s"`, `"2m"`, `"1h"`, `"250us"`.
pub fn parse(s: &str) -> Result<Duration, String> {
    let _ = s;
    todo!("common-config helper")
}

/// Formats like the input syntax, shortest exact form: `500ms`, `10s`, `1.5s`.
pub fn format(d: Duration) -> String {
    let _ = d;
    todo!("common-config helper")
}

/// For `#[serde(deserialize_with = "tether_common::duration::deserialize")]`.
pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let _ = d;
    todo!("common-config helper")
}

/// For `Option<Duration>` fields with `#[serde(default, deserialize_with = ...)]`.
pub fn deserialize_opt<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    deserialize(d).map(Some)
}
