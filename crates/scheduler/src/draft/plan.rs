//! How long each draft should be: how often drafts are accepted, by where they come from
//! ([`DraftStats`]), what a decode step costs at each batch size ([`StepCosts`]), and the
//! lengths that give a step the most expected tokens per second ([`DraftPlan`]).

use std::time::Duration;

use super::{From, Source, MAX_DRAFT};

/// How drafts fared, by source: decayed counts of draft tokens accepted and of drafts
/// refused before their end, for the model's sequences together.
#[derive(Debug)]
pub struct DraftStats {
    /// By `bucket`, then by the last draft's outcome.
    counts: [[(f64, f64); 3]; BUCKETS],
}

impl Default for DraftStats {
    fn default() -> Self {
        DraftStats { counts: [[(0.0, 0.0); 3]; BUCKETS] }
    }
}

const BUCKETS: usize = 8;
/// Acceptance before evidence, by bucket, and how many draft tokens' worth it counts.
const PRIOR: [f64; BUCKETS] = [0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.9];
const PRIOR_WEIGHT: f64 = 4.0;
/// Past outcomes weigh this much less at each verification of the same bucket.
const DECAY: f64 = 0.95;

impl DraftStats {
    /// Match lengths 2, 3, 4-5, 6-7, 8-15, 16-23, 24+; the table.
    fn bucket(from: From) -> usize {
        match from {
            From::Context(len) => match len {
                0..=2 => 0,
                3 => 1,
                4..=5 => 2,
                6..=7 => 3,
                8..=15 => 4,
                16..=23 => 5,
                _ => 6,
            },
            From::Table => 7,
        }
    }

    fn counts(&mut self, source: Source) -> &mut (f64, f64) {
        &mut self.counts[Self::bucket(source.from)][source.after as usize]
    }

    /// The chance that a draft token from `source` is accepted, given the ones before it
    /// were (a draft accepted whole counts no refusal). Before evidence, a prior worth a
    /// few drafts: the longer the match, the likelier its continuation.
    pub fn acceptance(&self, source: Source) -> f64 {
        let bucket = Self::bucket(source.from);
        let (accepted, refused) = self.counts[bucket][source.after as usize];
        let prior = PRIOR[bucket];
        (accepted + prior * PRIOR_WEIGHT) / (accepted + refused + PRIOR_WEIGHT)
    }

    /// How a draft from `source` fared.
    pub fn record(&mut self, source: Source, drafted: usize, accepted: usize) {
        if drafted == 0 {
            return;
        }
        let (a, r) = self.counts(source);
        *a = *a * DECAY + accepted as f64;
        *r = *r * DECAY + f64::from(u8::from(accepted < drafted));
    }
}

/// What decode steps cost, by batch size, as measured (decayed averages); sizes not
/// measured yet are estimated from the measured ones, optimistically above them.
#[derive(Debug)]
pub struct StepCosts {
    /// Milliseconds by batch size (index), or 0 when never measured (or forgotten).
    ms: Vec<f64>,
    /// When each size was last measured, counted in observations.
    seen: Vec<u64>,
    observations: u64,
    /// Every size's estimate, kept up to date with `ms`.
    estimates: Vec<f64>,
}

/// An unmeasured size above every measured one is priced as the largest measured plus
/// this share of a one-token step per extra token: below what any size costs here, so
/// that larger sizes get tried once.
const OPTIMISM: f64 = 0.05;
/// A measurement moves the estimate up slowly and down fast: a step slowed by something
/// else on the machine (another process, a page fault) must not make its size look dear
/// for long, since a size that looks dear is no longer chosen, so never measured again.
const RISE: f64 = 0.1;
const FALL: f64 = 0.5;
/// A size not measured for this many steps is forgotten, and so tried again: whatever
/// once made it look dear may have passed.
const STALE: u64 = 2_000;

impl StepCosts {
    pub fn new(max_batch: usize) -> StepCosts {
        let sizes = max_batch + 1;
        let mut costs =
            StepCosts { ms: vec![0.0; sizes], seen: vec![0; sizes], observations: 0, estimates: Vec::new() };
        costs.refresh();
        costs
    }

    /// A step of `size` tokens, all with logits, took `took`.
    pub fn observe(&mut self, size: usize, took: Duration) {
        let Some(slot) = self.ms.get_mut(size) else { return };
        let ms = took.as_secs_f64() * 1e3;
        let weight = if ms > *slot { RISE } else { FALL };
        *slot = if *slot == 0.0 { ms } else { *slot * (1.0 - weight) + ms * weight };
        self.observations += 1;
        self.seen[size] = self.observations;
        if self.observations.is_multiple_of(STALE) {
            for (ms, &seen) in self.ms.iter_mut().zip(&self.seen) {
                if seen + STALE < self.observations {
                    *ms = 0.0;
                }
            }
        }
        self.refresh();
    }

    /// Milliseconds a step of `size` tokens takes: as measured; else interpolated between
    /// the nearest measured sizes; else, above every measured size, the largest measured
    /// plus an optimistic share of a one-token step per extra token.
    pub fn estimate(&self, size: usize) -> f64 {
        self.estimates.get(size).copied().unwrap_or_else(|| self.estimates.last().copied().unwrap_or(40.0))
    }

    fn refresh(&mut self) {
        let n = self.ms.len();
        let one = self.ms.get(1).copied().filter(|&m| m > 0.0).unwrap_or(40.0);
        let measured: Vec<(usize, f64)> =
            self.ms.iter().enumerate().filter(|(_, &m)| m > 0.0).map(|(s, &m)| (s, m)).collect();
        self.estimates = (0..n)
            .map(|size| {
                let at = measured.partition_point(|&(s, _)| s < size);
                match (at.checked_sub(1).map(|i| measured[i]), measured.get(at).copied()) {
                    (_, Some((s, ms))) if s == size => ms,
                    (Some((lo, lo_ms)), Some((hi, hi_ms))) => {
                        lo_ms + (hi_ms - lo_ms) * (size - lo) as f64 / (hi - lo) as f64
                    }
                    (Some((lo, lo_ms)), None) => lo_ms + one * OPTIMISM * (size - lo) as f64,
                    (None, Some((hi, hi_ms))) => {
                        one + (hi_ms - one) * size.saturating_sub(1) as f64 / (hi - 1).max(1) as f64
                    }
                    (None, None) => one * (1.0 + OPTIMISM * size.saturating_sub(1) as f64),
                }
            })
            .collect();
    }
}

/// Draft lengths tried (a draft is cut to the length, or shorter when it has fewer
/// tokens): every one, since what a step costs is not smooth in its size. ggml's CPU
/// matrix kernels for the repacked quantized weights take the batch four tokens at a
/// time and each token left over as a pass of its own over the weights: with one decoding
/// token, a draft of 15 (a batch of 16) took 89 ms on an AVX-512 machine, one of 16 (17)
/// took 109 ms (medians).
const LENGTHS: std::ops::RangeInclusive<usize> = 1..=MAX_DRAFT;

/// The draft lengths of a step: the ones, among none and `LENGTHS`, that give the most
/// expected tokens per millisecond for the whole batch. `drafts` has, for each decoding
/// sequence, how long its draft can be and its acceptance; `decoding` counts the batch's
/// tokens before drafts (one per decoding sequence). Starting from the best of one length
/// for all and one sequence drafting alone, each sequence's length is changed while that
/// helps (the cost curve is not smooth: two drafts of 32 may together reach a cheaper
/// batch size than one of 48).
pub struct DraftPlan;

impl DraftPlan {
    pub fn lengths(drafts: &[(usize, f64)], decoding: usize, costs: &StepCosts) -> Vec<usize> {
        // a + a^2 + ... + a^d: each draft token is accepted only if every one before it was.
        let gain = |a: f64, d: usize| if a >= 1.0 { d as f64 } else { a * (1.0 - a.powi(d as i32)) / (1.0 - a) };
        let rate = |lengths: &[usize]| {
            let expected: f64 =
                decoding as f64 + drafts.iter().zip(lengths).map(|(&(_, a), &d)| gain(a, d)).sum::<f64>();
            expected / costs.estimate(decoding + lengths.iter().sum::<usize>())
        };
        // Starting points: one length for all, or one sequence drafting alone.
        let cut = |len: usize| drafts.iter().map(|&(available, _)| available.min(len)).collect::<Vec<_>>();
        let alone = |s: usize, len: usize| {
            let mut lengths = vec![0; drafts.len()];
            lengths[s] = drafts[s].0.min(len);
            lengths
        };
        let starts = LENGTHS
            .map(cut)
            .chain((0..drafts.len()).flat_map(|s| LENGTHS.map(move |len| (s, len))).map(|(s, len)| alone(s, len)));
        let mut best = cut(0);
        let mut best_rate = rate(&best);
        for lengths in starts {
            let r = rate(&lengths);
            if r > best_rate {
                (best, best_rate) = (lengths, r);
            }
        }
        let mut trial = best.clone();
        for _ in 0..4 * drafts.len() {
            let mut improved = false;
            for s in 0..drafts.len() {
                for len in 0..=drafts[s].0.min(*LENGTHS.end()) {
                    trial[s] = len;
                    let r = rate(&trial);
                    if r > best_rate * (1.0 + 1e-9) {
                        best.clone_from(&trial);
                        (best_rate, improved) = (r, true);
                    }
                }
                trial[s] = best[s];
            }
            if !improved {
                break;
            }
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::draft::Outcome;

    #[test]
    fn acceptance_follows_what_drafts_did_by_source() {
        let mut stats = DraftStats::default();
        let source = |from: From| Source { from, after: Outcome::None };
        let (long, short) = (source(From::Context(30)), source(From::Context(2)));
        assert_eq!(stats.acceptance(long), 0.9, "the prior");
        for _ in 0..10 {
            stats.record(long, 10, 10);
            stats.record(short, 4, 0);
        }
        assert!(stats.acceptance(long) > 0.95, "{}", stats.acceptance(long));
        assert!(stats.acceptance(short) < 0.2, "{}", stats.acceptance(short));
        assert_eq!(stats.acceptance(source(From::Table)), 0.9, "each source on its own");
        let after_cut = Source { from: From::Context(30), after: Outcome::Cut };
        assert_eq!(stats.acceptance(after_cut), 0.9, "and by how the sequence's last draft fared");
    }

    #[test]
    fn the_plan_weighs_acceptance_against_what_steps_cost() {
        // Costs as measured on the reference machine: a step of 64 is cheaper than one of 48.
        let mut costs = StepCosts::new(512);
        for (size, ms) in [
            (1, 42.0),
            (2, 60.0),
            (3, 74.0),
            (5, 113.0),
            (9, 160.0),
            (17, 250.0),
            (33, 465.0),
            (49, 667.0),
            (64, 470.0),
            (96, 700.0),
            (128, 880.0),
        ] {
            costs.observe(size, Duration::from_secs_f64(ms / 1e3));
        }
        // Drafts that are always refused: none.
        assert_eq!(DraftPlan::lengths(&[(127, 0.05)], 1, &costs), vec![0]);
        // A copy the model follows: the long, cheap batch.
        assert_eq!(DraftPlan::lengths(&[(127, 0.98)], 1, &costs), vec![63]);
        // Two sequences: the copying one drafts, the other not.
        let both = DraftPlan::lengths(&[(127, 0.98), (127, 0.05)], 2, &costs);
        assert!(both[0] >= 32 && both[1] == 0, "{both:?}");
        // Between measured sizes, costs are interpolated; above them, optimistic.
        assert_eq!(costs.estimate(4), 93.5);
        assert!(costs.estimate(150) < 1000.0);
        // Unmeasured sizes are tried.
        let fresh = StepCosts::new(512);
        assert!(DraftPlan::lengths(&[(127, 0.5)], 1, &fresh)[0] > 0);
    }

    #[test]
    fn the_plan_finds_the_batch_sizes_the_kernels_like() {
        // Medians measured on an AVX-512 machine (one stream, Qwen 0.5B Q4_K_M): a batch
        // of a multiple of four tokens costs less than the size above it.
        let mut costs = StepCosts::new(64);
        let measured = [17.0, 41.0, 51.0, 53.0, 76.0, 80.0, 92.0, 70.0, 91.0, 96.0, 108.0, 90.0, 105.0, 113.0];
        let more = [123.0, 89.0, 109.0, 111.0, 127.0, 125.0];
        for (size, ms) in (1..).zip(measured.into_iter().chain(more)) {
            costs.observe(size, Duration::from_secs_f64(ms / 1e3));
        }
        // A draft of 15 (a batch of 16) rather than 16 (17).
        assert_eq!(DraftPlan::lengths(&[(19, 0.95)], 1, &costs), vec![15]);
    }

    #[test]
    fn a_slow_step_does_not_stop_drafts_for_good() {
        let mut costs = StepCosts::new(64);
        let observe = |costs: &mut StepCosts, size, ms: f64| costs.observe(size, Duration::from_secs_f64(ms / 1e3));
        for _ in 0..20 {
            observe(&mut costs, 1, 10.0);
            observe(&mut costs, 2, 10.5);
        }
        // One token of draft, accepted 6 times in 10: worth it at 1.05 times the cost.
        let drafting = |costs: &StepCosts| DraftPlan::lengths(&[(1, 0.6)], 1, costs) == vec![1];
        assert!(drafting(&costs));
        // One step of two slowed by something else: still worth it.
        observe(&mut costs, 2, 50.0);
        assert!(drafting(&costs), "one slow step: {} ms", costs.estimate(2));
        // Slowed for a while: not worth it, and the size is not measured again...
        for _ in 0..10 {
            observe(&mut costs, 2, 50.0);
        }
        assert!(!drafting(&costs));
        // ...until it is forgotten, and tried again.
        for _ in 0..STALE * 2 {
            observe(&mut costs, 1, 10.0);
        }
        assert!(drafting(&costs), "{} ms", costs.estimate(2));
    }
}
