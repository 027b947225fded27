//! Token prices and what requests cost.
//!
//! Rounding: a request's cost is computed exactly (in nano-USD per million, as i128) and
//! rounded half up to a whole nano-USD once, per request. Its hold uses the same function
//! on the worst case, so a cost never exceeds its hold.

use crate::Nanos;

/// Prices are per this many tokens.
pub const PRICE_UNIT_TOKENS: i128 = 1_000_000;

/// What 1,000,000 tokens cost.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Price {
    pub input: Nanos,
    pub output: Nanos,
    /// Prompt tokens served from the KV cache.
    pub cached: Nanos,
}

impl Price {
    /// What a request that used these tokens costs. Cached tokens are part of `prompt`.
    pub fn cost(&self, prompt: u64, cached: u64, completion: u64) -> Nanos {
        let cached = cached.min(prompt);
        let scaled = i128::from(prompt - cached) * i128::from(self.input.0)
            + i128::from(cached) * i128::from(self.cached.0)
            + i128::from(completion) * i128::from(self.output.0);
        round_to_nanos(scaled)
    }

    /// The most a request of this size can cost, whichever prompt tokens turn out cached.
    pub fn worst_case(&self, prompt: u64, max_completion: u64) -> Nanos {
        let per_prompt_token = self.input.0.max(self.cached.0);
        round_to_nanos(
            i128::from(prompt) * i128::from(per_prompt_token) + i128::from(max_completion) * i128::from(self.output.0),
        )
    }

    /// What `tokens` prompt tokens cost at the full input price: what `tm cost` and the
    /// console call the cache's saving, for cached tokens.
    pub fn input_cost(&self, tokens: u64) -> Nanos {
        round_to_nanos(i128::from(tokens) * i128::from(self.input.0))
    }

    /// What the cached tokens would have cost more at the full input price.
    pub fn cache_saving(&self, cached: u64) -> Nanos {
        round_to_nanos(i128::from(cached) * i128::from(self.input.0.saturating_sub(self.cached.0).max(0)))
    }
}

/// `scaled / 1e6` rounded half up, saturating.
fn round_to_nanos(scaled: i128) -> Nanos {
    let rounded = (scaled + PRICE_UNIT_TOKENS / 2).div_euclid(PRICE_UNIT_TOKENS);
    Nanos(i64::try_from(rounded).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    // $0.10, $0.40, $0.01 per million.
    const P: Price = Price { input: Nanos(100_000_000), output: Nanos(400_000_000), cached: Nanos(10_000_000) };

    fn price(input: i64, output: i64, cached: i64) -> Price {
        Price { input: Nanos(input), output: Nanos(output), cached: Nanos(cached) }
    }

    #[test]
    fn costs_are_exact_for_whole_nanos() {
        // 1000 uncached at 100 n/token + 200 cached at 10 + 50 out at 400.
        assert_eq!(P.cost(1200, 200, 50), Nanos(100_000 + 2_000 + 20_000));
        assert_eq!(P.cache_saving(200), Nanos(200 * 90));
        assert_eq!(P.worst_case(1200, 64), Nanos(1200 * 100 + 64 * 400));
    }

    #[test]
    fn rounding_is_half_up_once_per_request() {
        let p = price(1, 0, 0); // a millionth of a nano per token
        assert_eq!(p.cost(499_999, 0, 0), Nanos(0));
        assert_eq!(p.cost(500_000, 0, 0), Nanos(1));
        assert_eq!(p.cost(1_499_999, 0, 0), Nanos(1));
        assert_eq!(p.cost(1_500_000, 0, 0), Nanos(2));
    }

    proptest! {
        #[test]
        fn a_cost_never_exceeds_its_hold(
            input in 0..10_000_000_000i64, output in 0..10_000_000_000i64, cached_price in 0..10_000_000_000i64,
            prompt in 0..1_000_000u64, cached in 0..1_000_000u64, max in 0..1_000_000u64, used in 0..1_000_000u64,
        ) {
            let p = price(input, output, cached_price);
            let completion = used.min(max);
            prop_assert!(p.cost(prompt, cached, completion) <= p.worst_case(prompt, max));
            prop_assert!(p.cost(prompt, cached, completion) >= Nanos::ZERO);
        }

        #[test]
        fn cost_is_additive_within_rounding(
            input in 0..10_000_000_000i64, output in 0..10_000_000_000i64,
            a in 0..1_000_000u64, b in 0..1_000_000u64,
        ) {
            let p = price(input, output, 0);
            let whole = p.cost(a + b, 0, 0);
            let parts = p.cost(a, 0, 0) + p.cost(b, 0, 0);
            prop_assert!((whole - parts).0.abs() <= 1);
        }
    }
}
