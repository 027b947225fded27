//! Times as Unix milliseconds, and their RFC 3339 form (what the Control Plane's JSON
//! carries).

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Milliseconds since 1970-01-01T00:00:00Z.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UnixMs(pub i64);

impl UnixMs {
    pub const fn get(self) -> i64 {
        self.0
    }

    /// RFC 3339 in UTC (`2026-12-06T17:13:30.5Z`); empty when out of range.
    pub fn rfc3339(self) -> String {
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(self.0) * 1_000_000)
            .ok()
            .and_then(|t| t.format(&Rfc3339).ok())
            .unwrap_or_default()
    }

    /// From RFC 3339; a time without an offset is read as UTC, as the official CLI writes
    /// it. None when it is not a time.
    pub fn parse_rfc3339(s: &str) -> Option<UnixMs> {
        let s = s.trim();
        let parsed =
            OffsetDateTime::parse(s, &Rfc3339).or_else(|_| OffsetDateTime::parse(&format!("{s}Z"), &Rfc3339)).ok()?;
        Some(UnixMs(i64::try_from(parsed.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trips() {
        let t = UnixMs(1_796_577_210_500);
        assert_eq!(t.rfc3339(), "2026-12-06T17:13:30.5Z");
        assert_eq!(UnixMs::parse_rfc3339(&t.rfc3339()), Some(t));
        assert_eq!(UnixMs::parse_rfc3339("2026-12-06T17:13:30.5"), Some(t), "no offset: UTC");
        assert_eq!(UnixMs::parse_rfc3339("2026-12-06T18:13:30.5+01:00"), Some(t));
        assert_eq!(UnixMs::parse_rfc3339("yesterday"), None);
    }
}
