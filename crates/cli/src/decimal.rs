//! Just enough of Python's `decimal.Decimal` for `tm cost`: exact sums and products,
//! exact division by powers of ten with Python's exponent rules, half-even quantization,
//! and `str()` (including its scientific notation for very small values), so that the
//! amounts print exactly as the official CLI prints them.

use std::cmp::Ordering;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dec {
    coef: i128,
    exp: i32,
}

impl Dec {
    pub const ZERO: Dec = Dec { coef: 0, exp: 0 };

    pub fn int(n: i128) -> Dec {
        Dec { coef: n, exp: 0 }
    }

    /// `Decimal(str)`: digits with an optional sign, point and exponent.
    pub fn parse(s: &str) -> Option<Dec> {
        let s = s.trim();
        let (mantissa, exp) = match s.find(['e', 'E']) {
            Some(i) => (&s[..i], s[i + 1..].parse::<i32>().ok()?),
            None => (s, 0),
        };
        let (negative, digits) = match mantissa.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, mantissa.strip_prefix('+').unwrap_or(mantissa)),
        };
        let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
        if int.is_empty() && frac.is_empty() || !int.chars().chain(frac.chars()).all(|c| c.is_ascii_digit()) {
            return None;
        }
        let coef: i128 = format!("{int}{frac}").parse().ok()?;
        Some(Dec { coef: if negative { -coef } else { coef }, exp: exp - frac.len() as i32 })
    }

    /// `Decimal(units) + Decimal(nanos) / Decimal(10**9)`.
    pub fn money(units: &str, nanos: i64) -> Dec {
        Dec::parse(units).unwrap_or(Dec::ZERO).add(Dec::int(i128::from(nanos)).div_pow10(9))
    }

    pub fn add(self, other: Dec) -> Dec {
        let exp = self.exp.min(other.exp);
        Dec { coef: self.scaled(exp) + other.scaled(exp), exp }
    }

    pub fn mul_int(self, n: i128) -> Dec {
        Dec { coef: self.coef * n, exp: self.exp }
    }

    /// Exact division by `10^k`: the result keeps the dividend's exponent when it can,
    /// else the fewest more decimal places (Python's ideal-exponent rule).
    pub fn div_pow10(self, k: u32) -> Dec {
        let ideal = self.exp;
        let (mut coef, mut exp) = (self.coef, self.exp - k as i32);
        while coef != 0 && coef % 10 == 0 && exp < ideal {
            coef /= 10;
            exp += 1;
        }
        if coef == 0 {
            exp = ideal;
        }
        Dec { coef, exp }
    }

    /// Rounded half-even to `exp` (`quantize(Decimal('1E<exp>'))`).
    pub fn quantize(self, exp: i32) -> Dec {
        if self.exp >= exp {
            return Dec { coef: self.scaled(exp), exp };
        }
        let div = 10i128.pow((exp - self.exp) as u32);
        let (q, r) = (self.coef.div_euclid(div), self.coef.rem_euclid(div));
        let twice = 2 * r;
        let up = twice > div || (twice == div && q % 2 != 0);
        Dec { coef: q + i128::from(up), exp }
    }

    /// `(self / other * 100).quantize(Decimal("0.1"))`.
    pub fn percent_of(self, other: Dec) -> Dec {
        let exp = self.exp.min(other.exp);
        let (num, den) = (self.scaled(exp) * 1000, other.scaled(exp));
        let (q, r) = (num.div_euclid(den), num.rem_euclid(den));
        let twice = 2 * r;
        let up = twice > den || (twice == den && q % 2 != 0);
        Dec { coef: q + i128::from(up), exp: -1 }
    }

    fn scaled(self, exp: i32) -> i128 {
        self.coef * 10i128.pow((self.exp - exp).max(0) as u32)
    }
}

impl PartialOrd for Dec {
    fn partial_cmp(&self, other: &Dec) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Dec {
    fn cmp(&self, other: &Dec) -> Ordering {
        let exp = self.exp.min(other.exp);
        self.scaled(exp).cmp(&other.scaled(exp))
    }
}

/// Python's `str(Decimal)`.
impl std::fmt::Display for Dec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let digits = self.coef.unsigned_abs().to_string();
        let left = self.exp + digits.len() as i32;
        let dot = if self.exp <= 0 && left > -6 { left } else { 1 };
        let (int, frac) = if dot <= 0 {
            ("0".to_owned(), format!(".{}{digits}", "0".repeat((-dot) as usize)))
        } else if dot as usize >= digits.len() {
            (format!("{digits}{}", "0".repeat(dot as usize - digits.len())), String::new())
        } else {
            (digits[..dot as usize].to_owned(), format!(".{}", &digits[dot as usize..]))
        };
        let sign = if self.coef < 0 { "-" } else { "" };
        let exp = if left == dot { String::new() } else { format!("E{:+}", left - dot) };
        write!(f, "{sign}{int}{frac}{exp}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Dec {
        Dec::parse(s).unwrap()
    }

    #[test]
    fn prints_like_python() {
        // Values checked against CPython's decimal module.
        assert_eq!(Dec::money("0", 100_000_000).to_string(), "0.1");
        assert_eq!(Dec::money("0", 0).to_string(), "0");
        assert_eq!(Dec::money("1", 500_000_000).to_string(), "1.5");
        assert_eq!(Dec::money("0", 100_000_000).mul_int(352).div_pow10(6).to_string(), "0.0000352");
        assert_eq!(Dec::money("0", 100_000_000).mul_int(3).div_pow10(6).to_string(), "3E-7");
        assert_eq!(Dec::money("0", 100_000_000).mul_int(1_000_000).div_pow10(6).to_string(), "0.1");
        assert_eq!(d("0.0000045").add(Dec::ZERO).to_string(), "0.0000045");
        assert_eq!(d("0.00000045").to_string(), "4.5E-7");
        assert_eq!(d("12.30").to_string(), "12.30");
        assert_eq!(d("0.00004").quantize(-4).to_string(), "0.0000");
        assert_eq!(d("0.00005").quantize(-4).to_string(), "0.0000");
        assert_eq!(d("0.00015").quantize(-4).to_string(), "0.0002");
        assert_eq!(d("1.25").quantize(-4).to_string(), "1.2500");
        assert_eq!(d("0.12").percent_of(d("1.37")).to_string(), "8.8");
        assert!(d("0.5") > d("0.49"));
    }
}
