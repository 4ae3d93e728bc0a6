//! Durations in configuration files: `"30s"`, `"500ms"`, `"1m30s"` (parsed by `humantime`),
//! or a number of seconds (`30`, `0.25`). Written back as `humantime` writes them (`"1m 30s"`).

use std::{fmt, time::Duration};

use serde::{Deserialize, Deserializer, Serializer, de};

/// A duration as a file writes it.
pub(crate) struct Human(pub(crate) Duration);

impl<'de> Deserialize<'de> for Human {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(HumanVisitor).map(Human)
    }
}

struct HumanVisitor;

impl de::Visitor<'_> for HumanVisitor {
    type Value = Duration;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(r#"a duration such as "30s", "500ms" or "1m30s", or a number of seconds"#)
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Duration, E> {
        humantime::parse_duration(s.trim()).map_err(|e| {
            E::custom(format_args!(
                "invalid duration {s:?}: {e} (write e.g. \"30s\", \"500ms\" or \"1m30s\")"
            ))
        })
    }

    fn visit_u64<E: de::Error>(self, secs: u64) -> Result<Duration, E> {
        Ok(Duration::from_secs(secs))
    }

    fn visit_i64<E: de::Error>(self, secs: i64) -> Result<Duration, E> {
        u64::try_from(secs).map(Duration::from_secs).map_err(|_| {
            E::custom(format_args!(
                "invalid duration {secs}: a duration is not negative"
            ))
        })
    }

    fn visit_f64<E: de::Error>(self, secs: f64) -> Result<Duration, E> {
        Duration::try_from_secs_f64(secs).map_err(|_| {
            E::custom(format_args!(
                "invalid duration {secs}: not a number of seconds a duration holds"
            ))
        })
    }
}

/// `Option<Duration>` fields: `#[serde(default, with = "duration::option")]`.
pub(crate) mod option {
    use super::*;

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<Human>::deserialize(d)?.map(|h| h.0))
    }

    pub(crate) fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => super::serialize(d, s),
            None => s.serialize_none(),
        }
    }
}

pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    Human::deserialize(d).map(|h| h.0)
}

pub(crate) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&humantime::format_duration(*d))
}
