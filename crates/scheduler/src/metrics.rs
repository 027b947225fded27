//! What an engine reports on the Prometheus endpoint: cache hits per tier, KV usage, queue
//! depth, running sequences, time to first token and inter-token latency. The engine
//! thread updates them (atomics; a histogram takes a short lock per sample).

use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::model::Tier;
use crate::spill::SpillStats;

type Labels = Vec<(&'static str, &'static str)>;
type Ratio = Gauge<f64, std::sync::atomic::AtomicU64>;

/// A tier as a metric label.
fn labels(tier: Tier) -> Labels {
    vec![("tier", tier.label())]
}

/// One engine's metrics. Cloning shares them.
#[derive(Debug, Clone)]
pub struct EngineMetrics {
    pub prompt_tokens: Counter,
    pub generation_tokens: Counter,
    hit_tokens: Family<Labels, Counter>,
    hit_ratio: Family<Labels, Ratio>,
    /// The families' members, by `Tier::ALL` order.
    hits: [Counter; 3],
    ratios: [Ratio; 3],
    pub kv_used_cells: Gauge,
    pub kv_idle_cells: Gauge,
    pub kv_capacity_cells: Gauge,
    pub kv_usage: Ratio,
    pub evicted_tokens: Counter,
    pub queue_depth: Gauge,
    pub running: Gauge,
    pub ttft: Histogram,
    pub inter_token: Histogram,
    spill_bytes: Family<Labels, Gauge>,
    spill_entries: Family<Labels, Gauge>,
    pub drafted_tokens: Counter,
    pub accepted_tokens: Counter,
    pub acceptance: Ratio,
}

impl Default for EngineMetrics {
    fn default() -> Self {
        let hit_tokens = Family::<Labels, Counter>::default();
        let hit_ratio = Family::<Labels, Ratio>::default();
        let hits = Tier::ALL.map(|t| hit_tokens.get_or_create(&labels(t)).clone());
        let ratios = Tier::ALL.map(|t| hit_ratio.get_or_create(&labels(t)).clone());
        EngineMetrics {
            prompt_tokens: Counter::default(),
            generation_tokens: Counter::default(),
            hit_tokens,
            hit_ratio,
            hits,
            ratios,
            kv_used_cells: Gauge::default(),
            kv_idle_cells: Gauge::default(),
            kv_capacity_cells: Gauge::default(),
            kv_usage: Ratio::default(),
            evicted_tokens: Counter::default(),
            queue_depth: Gauge::default(),
            running: Gauge::default(),
            // 5 ms .. ~80 s
            ttft: Histogram::new(exponential_buckets(0.005, 2.0, 15)),
            // 1 ms .. ~16 s
            inter_token: Histogram::new(exponential_buckets(0.001, 2.0, 15)),
            spill_bytes: Family::default(),
            spill_entries: Family::default(),
            drafted_tokens: Counter::default(),
            accepted_tokens: Counter::default(),
            acceptance: Ratio::default(),
        }
    }
}

impl EngineMetrics {
    /// Registers the metrics under `registry` (which carries the model label).
    pub fn register(&self, registry: &mut Registry) {
        registry.register("prompt_tokens", "Prompt tokens of admitted requests", self.prompt_tokens.clone());
        registry.register("generation_tokens", "Tokens generated", self.generation_tokens.clone());
        registry.register(
            "prefix_cache_hit_tokens",
            "Prompt tokens whose KV was reused instead of computed, by where it was: kv (in the context), \
             ram or disk (restored from a spilled snapshot)",
            self.hit_tokens.clone(),
        );
        registry.register(
            "prefix_cache_hit_ratio",
            "Share of all prompt tokens since start served from each tier",
            self.hit_ratio.clone(),
        );
        registry.register(
            "kv_cache_used_cells",
            "KV cells holding tokens (running and cached)",
            self.kv_used_cells.clone(),
        );
        registry.register(
            "kv_cache_idle_cells",
            "KV cells held only by cached prefixes (freed on demand)",
            self.kv_idle_cells.clone(),
        );
        registry.register("kv_cache_capacity_cells", "KV cells in the context", self.kv_capacity_cells.clone());
        registry.register("kv_cache_usage_ratio", "Used KV cells over capacity", self.kv_usage.clone());
        registry.register("kv_cache_evicted_tokens", "Cached tokens dropped to make room", self.evicted_tokens.clone());
        registry.register(
            "speculative_drafted_tokens",
            "Draft tokens verified (speculative decoding with drafts from the context)",
            self.drafted_tokens.clone(),
        );
        registry.register(
            "speculative_accepted_tokens",
            "Draft tokens the model's samples agreed with (each saved a decode step)",
            self.accepted_tokens.clone(),
        );
        registry.register("speculative_acceptance_ratio", "Accepted / drafted tokens so far", self.acceptance.clone());
        registry.register("queue_depth", "Requests waiting for a sequence", self.queue_depth.clone());
        registry.register("running_sequences", "Requests being computed", self.running.clone());
        registry.register(
            "time_to_first_token_seconds",
            "From submission to the first generated token",
            self.ttft.clone(),
        );
        registry.register(
            "inter_token_latency_seconds",
            "Between consecutive tokens of one request",
            self.inter_token.clone(),
        );
        registry.register("kv_spill_bytes", "Bytes of spilled KV snapshots, by tier", self.spill_bytes.clone());
        registry.register("kv_spill_entries", "Spilled KV snapshots, by tier", self.spill_entries.clone());
        for tier in [Tier::Ram, Tier::Disk] {
            let _ = self.spill_bytes.get_or_create(&labels(tier));
            let _ = self.spill_entries.get_or_create(&labels(tier));
        }
    }

    pub fn spill(&self, stats: SpillStats) {
        for (tier, bytes, entries) in
            [(Tier::Ram, stats.ram_bytes, stats.ram_entries), (Tier::Disk, stats.disk_bytes, stats.disk_entries)]
        {
            self.spill_bytes.get_or_create(&labels(tier)).set(bytes as i64);
            self.spill_entries.get_or_create(&labels(tier)).set(entries as i64);
        }
    }

    /// An admitted prompt of `prompt` tokens, `reused` of them from `tier`.
    pub fn admitted(&self, prompt: usize, reused: usize, tier: Tier) {
        self.prompt_tokens.inc_by(prompt as u64);
        self.hits[tier as usize].inc_by(reused as u64);
        let total = self.prompt_tokens.get().max(1) as f64;
        for (hits, ratio) in self.hits.iter().zip(&self.ratios) {
            ratio.set(hits.get() as f64 / total);
        }
    }

    pub fn hit_tokens(&self, tier: Tier) -> u64 {
        self.hits[tier as usize].get()
    }

    pub fn kv(&self, used: usize, idle: usize, capacity: usize) {
        self.kv_used_cells.set(used as i64);
        self.kv_idle_cells.set(idle as i64);
        self.kv_capacity_cells.set(capacity as i64);
        self.kv_usage.set(used as f64 / capacity.max(1) as f64);
    }

    /// A verified draft.
    pub fn drafted(&self, drafted: usize, accepted: usize) {
        let d = self.drafted_tokens.inc_by(drafted as u64) + drafted as u64;
        let a = self.accepted_tokens.inc_by(accepted as u64) + accepted as u64;
        self.acceptance.set(a as f64 / d.max(1) as f64);
    }

    pub fn token(&self, since: Duration, first: bool) {
        self.generation_tokens.inc();
        if first {
            self.ttft.observe(since.as_secs_f64());
        } else {
            self.inter_token.observe(since.as_secs_f64());
        }
    }
}
