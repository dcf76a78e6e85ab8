//! Durations written the way Prometheus and Alertmanager write them
//! (`90s`, `5m`, `1h30m`, `250ms`), so one syntax serves every config file an
//! operator edits next to ours.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A non-negative span of time in Prometheus syntax.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct PromDuration(pub Duration);

impl PromDuration {
    /// As a span to add to or take from timestamps; longer than chrono can
    /// hold is the longest it can.
    pub fn as_delta(self) -> chrono::Duration {
        chrono::Duration::from_std(self.0).unwrap_or(chrono::Duration::MAX)
    }
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid duration {input:?}: expected a Prometheus duration such as 30s, 5m or 1h30m (units ms, s, m, h, d, w, y)"
)]
pub struct ParseDurationError {
    input: String,
}

const UNITS: [(&str, u64); 7] = [
    ("ms", 1),
    ("s", 1_000),
    ("m", 60_000),
    ("h", 3_600_000),
    ("d", 86_400_000),
    ("w", 604_800_000),
    ("y", 31_536_000_000),
];

impl FromStr for PromDuration {
    type Err = ParseDurationError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let err = || ParseDurationError {
            input: input.to_owned(),
        };
        match input {
            "" => return Err(err()),
            "0" => return Ok(PromDuration(Duration::ZERO)),
            _ => {}
        }
        let mut rest = input;
        let mut millis: u64 = 0;
        // Units must appear largest first, each at most once, as in Prometheus.
        let mut previous: Option<usize> = None;
        while !rest.is_empty() {
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 {
                return Err(err());
            }
            let number: u64 = rest[..digits].parse().map_err(|_| err())?;
            rest = &rest[digits..];
            // "ms" must be tried before "m" and "s".
            let (index, (unit, factor)) = UNITS
                .iter()
                .enumerate()
                .find(|(_, (unit, _))| rest.starts_with(unit))
                .ok_or_else(err)?;
            if previous.is_some_and(|p| index >= p) {
                return Err(err());
            }
            previous = Some(index);
            rest = &rest[unit.len()..];
            millis = number
                .checked_mul(*factor)
                .and_then(|m| millis.checked_add(m))
                .ok_or_else(err)?;
        }
        Ok(PromDuration(Duration::from_millis(millis)))
    }
}

impl fmt::Display for PromDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut millis = self.0.as_millis() as u64;
        if millis == 0 {
            return f.write_str("0s");
        }
        for (unit, factor) in UNITS.iter().rev() {
            if millis >= *factor {
                write!(f, "{}{unit}", millis / factor)?;
                millis %= factor;
            }
        }
        Ok(())
    }
}

impl<'de> Deserialize<'de> for PromDuration {
    /// Parsed inside the visitor, so that a bad value's error carries the
    /// value's own position (serde_yaml marks errors raised while it reads
    /// the scalar; one raised after would point at the enclosing mapping).
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Text;
        impl serde::de::Visitor<'_> for Text {
            type Value = PromDuration;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a Prometheus duration such as 30s, 5m or 1h30m")
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<PromDuration, E> {
                text.parse().map_err(E::custom)
            }
        }
        deserializer.deserialize_str(Text)
    }
}

impl Serialize for PromDuration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(text: &str) -> u128 {
        text.parse::<PromDuration>().unwrap().0.as_millis()
    }

    #[test]
    fn parses_prometheus_durations() {
        assert_eq!(ms("0"), 0);
        assert_eq!(ms("250ms"), 250);
        assert_eq!(ms("30s"), 30_000);
        assert_eq!(ms("5m"), 300_000);
        assert_eq!(ms("1h30m"), 5_400_000);
        assert_eq!(ms("1d2h3m4s5ms"), 93_784_005);
        assert_eq!(ms("2w"), 1_209_600_000);
    }

    #[test]
    fn rejects_what_prometheus_rejects() {
        for bad in [
            "",
            "5",
            "m",
            "1.5s",
            "-1s",
            "5x",
            "30m1h",
            "1s1s",
            " 5s",
            "99999999999999999999y",
        ] {
            assert!(bad.parse::<PromDuration>().is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn displays_in_the_same_syntax() {
        for text in ["0s", "250ms", "1h30m", "1d2h3m4s5ms"] {
            assert_eq!(text.parse::<PromDuration>().unwrap().to_string(), text);
        }
    }
}
