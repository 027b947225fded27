//! USD in integer nano-dollars.

use std::fmt;
use std::iter::Sum;
use std::ops::{Add, AddAssign, Neg, Sub, SubAssign};

pub const NANOS_PER_USD: i64 = 1_000_000_000;

/// An amount of USD in nano-dollars (10^-9 USD).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Nanos(pub i64);

impl Nanos {
    pub const ZERO: Nanos = Nanos(0);

    pub const fn get(self) -> i64 {
        self.0
    }

    /// From an amount of USD, rounded to the nearest nano; None when not finite or out of
    /// range.
    pub fn from_usd(usd: f64) -> Option<Nanos> {
        let nanos = (usd * NANOS_PER_USD as f64).round();
        (nanos.is_finite() && nanos.abs() < 9.2e18).then_some(Nanos(nanos as i64))
    }

    /// An exact decimal string of USD without trailing zeros: `"0.000123"`, `"12.3"`.
    pub fn usd_decimal(self) -> String {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        let (units, frac) = (abs / NANOS_PER_USD as u64, abs % NANOS_PER_USD as u64);
        if frac == 0 {
            return format!("{sign}{units}");
        }
        let frac = format!("{frac:09}");
        format!("{sign}{units}.{}", frac.trim_end_matches('0'))
    }

    /// `google.type.Money`'s parts: whole USD and the nano-dollars left, with one sign.
    pub fn units_and_nanos(self) -> (i64, i64) {
        (self.0 / NANOS_PER_USD, self.0 % NANOS_PER_USD)
    }

    /// From `google.type.Money`'s parts; None when they overflow.
    pub fn from_units_and_nanos(units: i64, nanos: i64) -> Option<Nanos> {
        units.checked_mul(NANOS_PER_USD).and_then(|u| u.checked_add(nanos)).map(Nanos)
    }

    pub fn saturating_sub(self, other: Nanos) -> Nanos {
        Nanos(self.0.saturating_sub(other.0))
    }
}

/// The decimal amount of USD.
impl fmt::Display for Nanos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.usd_decimal())
    }
}

impl Add for Nanos {
    type Output = Nanos;
    fn add(self, other: Nanos) -> Nanos {
        Nanos(self.0 + other.0)
    }
}

impl Sub for Nanos {
    type Output = Nanos;
    fn sub(self, other: Nanos) -> Nanos {
        Nanos(self.0 - other.0)
    }
}

impl AddAssign for Nanos {
    fn add_assign(&mut self, other: Nanos) {
        self.0 += other.0;
    }
}

impl SubAssign for Nanos {
    fn sub_assign(&mut self, other: Nanos) {
        self.0 -= other.0;
    }
}

impl Neg for Nanos {
    type Output = Nanos;
    fn neg(self) -> Nanos {
        Nanos(-self.0)
    }
}

impl Sum for Nanos {
    fn sum<I: Iterator<Item = Nanos>>(iter: I) -> Nanos {
        Nanos(iter.map(|n| n.0).sum())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_strings() {
        assert_eq!(Nanos(0).usd_decimal(), "0");
        assert_eq!(Nanos(1).usd_decimal(), "0.000000001");
        assert_eq!(Nanos(12_300_000_000).to_string(), "12.3");
        assert_eq!(Nanos(-1_500_000_000).usd_decimal(), "-1.5");
    }

    #[test]
    fn usd_amounts_round_to_the_nearest_nano() {
        assert_eq!(Nanos::from_usd(2.5), Some(Nanos(2_500_000_000)));
        assert_eq!(Nanos::from_usd(0.0000000014), Some(Nanos(1)));
        assert_eq!(Nanos::from_usd(f64::NAN), None);
        assert_eq!(Nanos::from_usd(1e12), None);
    }

    #[test]
    fn money_parts_share_one_sign() {
        assert_eq!(Nanos(12_500_000_000).units_and_nanos(), (12, 500_000_000));
        assert_eq!(Nanos(-1_250_000_000).units_and_nanos(), (-1, -250_000_000));
        assert_eq!(Nanos::from_units_and_nanos(-1, -250_000_000), Some(Nanos(-1_250_000_000)));
        assert_eq!(Nanos::from_units_and_nanos(i64::MAX, 0), None);
    }

    #[test]
    fn arithmetic() {
        let mut n = Nanos(5) + Nanos(7) - Nanos(2);
        n += Nanos(1);
        n -= Nanos(3);
        assert_eq!(n, Nanos(8));
        assert_eq!([Nanos(1), Nanos(2)].into_iter().sum::<Nanos>(), Nanos(3));
        assert_eq!(-Nanos(4), Nanos(-4));
    }
}
