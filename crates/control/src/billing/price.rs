//! Token prices and what requests cost, in integer nano-USD.
//!
//! Rounding: a request's cost is computed exactly (in nano-USD per million, as i128) and
//! rounded half up to a whole nano-USD once, per request. Its hold uses the same function
//! on the worst case, so a cost never exceeds its hold.

pub const NANOS_PER_USD: i64 = 1_000_000_000;
/// Prices are per this many tokens.
pub const PRICE_UNIT_TOKENS: i128 = 1_000_000;

/// Nano-USD per 1,000,000 tokens.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Price {
    pub input: i64,
    pub output: i64,
    /// Prompt tokens served from the KV cache.
    pub cached: i64,
}

impl Price {
    /// What a request that used these tokens costs. Cached tokens are part of `prompt`.
    pub fn cost(&self, prompt: u64, cached: u64, completion: u64) -> i64 {
        let cached = cached.min(prompt);
        let scaled = i128::from(prompt - cached) * i128::from(self.input)
            + i128::from(cached) * i128::from(self.cached)
            + i128::from(completion) * i128::from(self.output);
        round_to_nanos(scaled)
    }

    /// The most a request of this size can cost, whichever prompt tokens turn out cached.
    pub fn worst_case(&self, prompt: u64, max_completion: u64) -> i64 {
        let per_prompt_token = self.input.max(self.cached);
        round_to_nanos(
            i128::from(prompt) * i128::from(per_prompt_token) + i128::from(max_completion) * i128::from(self.output),
        )
    }

    /// What the cached tokens would have cost more at the full input price.
    pub fn cache_saving(&self, cached: u64) -> i64 {
        round_to_nanos(i128::from(cached) * i128::from(self.input.saturating_sub(self.cached).max(0)))
    }
}

/// `scaled / 1e6` rounded half up, saturating.
fn round_to_nanos(scaled: i128) -> i64 {
    let rounded = (scaled + PRICE_UNIT_TOKENS / 2).div_euclid(PRICE_UNIT_TOKENS);
    i64::try_from(rounded).unwrap_or(i64::MAX)
}

/// Nano-USD from an amount of USD (rounded to the nearest nano); None when not finite or
/// out of range.
pub fn nanos_from_usd(usd: f64) -> Option<i64> {
    let nanos = (usd * NANOS_PER_USD as f64).round();
    (nanos.is_finite() && nanos.abs() < 9.2e18).then_some(nanos as i64)
}

/// A decimal string of USD (`"0.000123"`), exact, without trailing zeros.
pub fn usd_decimal(nanos: i64) -> String {
    let sign = if nanos < 0 { "-" } else { "" };
    let abs = nanos.unsigned_abs();
    let (units, frac) = (abs / NANOS_PER_USD as u64, abs % NANOS_PER_USD as u64);
    if frac == 0 {
        return format!("{sign}{units}");
    }
    let frac = format!("{frac:09}");
    format!("{sign}{units}.{}", frac.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const P: Price = Price { input: 100_000_000, output: 400_000_000, cached: 10_000_000 }; // $0.10, $0.40, $0.01

    #[test]
    fn costs_are_exact_for_whole_nanos() {
        // 1000 uncached at 100 n/token + 200 cached at 10 + 50 out at 400.
        assert_eq!(P.cost(1200, 200, 50), 100_000 + 2_000 + 20_000);
        assert_eq!(P.cache_saving(200), 200 * 90);
        assert_eq!(P.worst_case(1200, 64), 1200 * 100 + 64 * 400);
    }

    #[test]
    fn rounding_is_half_up_once_per_request() {
        let p = Price { input: 1, output: 0, cached: 0 }; // a millionth of a nano per token
        assert_eq!(p.cost(499_999, 0, 0), 0);
        assert_eq!(p.cost(500_000, 0, 0), 1);
        assert_eq!(p.cost(1_499_999, 0, 0), 1);
        assert_eq!(p.cost(1_500_000, 0, 0), 2);
    }

    #[test]
    fn decimal_strings() {
        assert_eq!(usd_decimal(0), "0");
        assert_eq!(usd_decimal(1), "0.000000001");
        assert_eq!(usd_decimal(12_300_000_000), "12.3");
        assert_eq!(usd_decimal(-1_500_000_000), "-1.5");
    }

    proptest! {
        #[test]
        fn a_cost_never_exceeds_its_hold(
            input in 0..10_000_000_000i64, output in 0..10_000_000_000i64, cached_price in 0..10_000_000_000i64,
            prompt in 0..1_000_000u64, cached in 0..1_000_000u64, max in 0..1_000_000u64, used in 0..1_000_000u64,
        ) {
            let p = Price { input, output, cached: cached_price };
            let completion = used.min(max);
            prop_assert!(p.cost(prompt, cached, completion) <= p.worst_case(prompt, max));
            prop_assert!(p.cost(prompt, cached, completion) >= 0);
        }

        #[test]
        fn cost_is_additive_within_rounding(
            input in 0..10_000_000_000i64, output in 0..10_000_000_000i64,
            a in 0..1_000_000u64, b in 0..1_000_000u64,
        ) {
            let p = Price { input, output, cached: 0 };
            let whole = p.cost(a + b, 0, 0);
            let parts = p.cost(a, 0, 0) + p.cost(b, 0, 0);
            prop_assert!((whole - parts).abs() <= 1);
        }
    }
}
