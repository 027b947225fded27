//! Which endpoint serves a request. Prefix-aware routing sends prompts that start alike to
//! the endpoint that computed that start, so its KV cache serves it (what SGLang's router,
//! llm-d and Dynamo do). A prompt is cut into blocks of bytes, each hashed together with
//! the blocks before it; the index maps a block chain's hash to the endpoint that last
//! served it. It is approximate on purpose: an engine may have evicted a prefix the index
//! still points to, which costs one cache miss, never a wrong answer.
//!
//! A prefix this process has not seen goes to its *rendezvous* endpoint (highest random
//! weight over the endpoint URLs and the prompt's first block), not to whichever endpoint
//! this process found least loaded: several gateway replicas behind one load balancer then
//! send a new conversation's requests to the same engine without sharing any state, so the
//! fleet computes each prefix once however many replicas there are.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use crate::config::Routing;
use crate::pool::Endpoint;

/// A prefix is followed only while its endpoint's load is within this factor (plus
/// [`IMBALANCE_SLACK`]) of the least loaded endpoint's; beyond it, balance wins.
const IMBALANCE_FACTOR: f64 = 2.0;
const IMBALANCE_SLACK: f64 = 4.0;
/// Block hashes remembered per model (two generations of half each).
const INDEX_CAPACITY: usize = 1 << 20;

/// The prompt's chained block hashes, first block first. Only whole blocks are hashed: a
/// trailing partial block is the request's own tail.
pub fn block_hashes(prompt: &[u8], block_bytes: usize) -> Vec<u64> {
    let mut chain = DefaultHasher::new();
    prompt
        .chunks_exact(block_bytes.max(1))
        .map(|block| {
            block.hash(&mut chain);
            chain.finish()
        })
        .collect()
}

/// Weighted rendezvous (highest random weight) score of an endpoint for a prefix:
/// `weight / -ln(u)` with `u` uniform in (0, 1) from a hash of both, so that each endpoint
/// wins a `weight / sum(weights)` share of prefixes, and removing an endpoint moves only
/// its own. `DefaultHasher::new()` is the same in every process of one build, so replicas
/// agree (replicas of different builds may disagree until they run the same one: cache
/// misses, not errors).
fn rendezvous_score(prefix: u64, endpoint: &str, weight: u32) -> f64 {
    let mut h = DefaultHasher::new();
    prefix.hash(&mut h);
    endpoint.hash(&mut h);
    // 53 random bits, never 0: u in (0, 1).
    let u = ((h.finish() >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    f64::from(weight) / -u.ln()
}

/// Block chain hash -> endpoint index. Two generations approximate LRU at no per-lookup
/// cost: inserts go to `current`; when it is full it becomes `previous`, and what
/// `previous` held is forgotten unless it was used again meanwhile.
#[derive(Default)]
struct PrefixIndex {
    current: HashMap<u64, usize>,
    previous: HashMap<u64, usize>,
}

impl PrefixIndex {
    /// For each endpoint, how many leading blocks of `hashes` it served last.
    fn matched_blocks(&self, hashes: &[u64], endpoints: usize) -> Vec<usize> {
        let mut matched = vec![0; endpoints];
        for (i, h) in hashes.iter().enumerate() {
            match self.current.get(h).or_else(|| self.previous.get(h)) {
                Some(&e) if e < endpoints => matched[e] = i + 1,
                _ => break,
            }
        }
        matched
    }

    fn record(&mut self, hashes: &[u64], endpoint: usize) {
        for &h in hashes {
            if self.current.len() >= INDEX_CAPACITY / 2 {
                self.previous = std::mem::take(&mut self.current);
            }
            self.current.insert(h, endpoint);
        }
    }
}

pub struct Router {
    policy: Routing,
    endpoints: Vec<Arc<Endpoint>>,
    index: Mutex<PrefixIndex>,
    /// Smooth weighted round robin's position.
    turn: AtomicU64,
}

impl Router {
    pub fn new(policy: Routing, endpoints: Vec<Arc<Endpoint>>) -> Router {
        Router { policy, endpoints, index: Mutex::default(), turn: AtomicU64::new(0) }
    }

    pub fn endpoints(&self) -> &[Arc<Endpoint>] {
        &self.endpoints
    }

    /// Endpoint indices in the order to try them: the routing choice first, then the
    /// others by load (for retries). Unavailable endpoints (unhealthy or full) go last,
    /// so a request still has somewhere to go when every check says no.
    pub fn order(&self, hashes: &[u64], now: Instant) -> Vec<usize> {
        let mut by_load = self.by_load(now);
        let first = match self.policy {
            Routing::LeastLoaded => None,
            Routing::RoundRobin => self.round_robin(now),
            Routing::Prefix => self.by_prefix(hashes, &by_load, now),
        };
        if let Some(first) = first {
            by_load.retain(|&i| i != first);
            by_load.insert(0, first);
        }
        by_load
    }

    /// Endpoint indices, available ones first, each group least loaded first: for the small
    /// side calls (tokenizing), which leave the routing policy's state (round robin's turn)
    /// alone.
    pub fn by_load(&self, now: Instant) -> Vec<usize> {
        let mut by_load: Vec<usize> = (0..self.endpoints.len()).collect();
        by_load.sort_by(|&a, &b| {
            let (ea, eb) = (&self.endpoints[a], &self.endpoints[b]);
            eb.available(now).cmp(&ea.available(now)).then(ea.load().total_cmp(&eb.load()))
        });
        by_load
    }

    /// Remembers that `endpoint` now holds the prompt's blocks.
    pub fn served(&self, hashes: &[u64], endpoint: usize) {
        if self.policy == Routing::Prefix && !hashes.is_empty() {
            self.index.lock().unwrap_or_else(PoisonError::into_inner).record(hashes, endpoint);
        }
    }

    fn by_prefix(&self, hashes: &[u64], by_load: &[usize], now: Instant) -> Option<usize> {
        let least = *by_load.first()?;
        let least_load = self.endpoints[least].load();
        let index = self.index.lock().unwrap_or_else(PoisonError::into_inner);
        let matched = index.matched_blocks(hashes, self.endpoints.len());
        // Longest match among available endpoints not too far above the least loaded;
        // ties go to the less loaded (by_load's order).
        let followed = by_load
            .iter()
            .copied()
            .filter(|&i| matched[i] > 0 && self.endpoints[i].available(now))
            .filter(|&i| self.endpoints[i].load() <= least_load * IMBALANCE_FACTOR + IMBALANCE_SLACK)
            .max_by_key(|&i| (matched[i], std::cmp::Reverse(by_load.iter().position(|&j| j == i))));
        // A new prefix goes to its rendezvous endpoint among those not too busy: the same
        // one from every replica, and spread over the endpoints by the hash.
        followed.or_else(|| {
            let first_block = *hashes.first()?;
            by_load
                .iter()
                .copied()
                .filter(|&i| self.endpoints[i].available(now))
                .filter(|&i| self.endpoints[i].load() <= least_load * IMBALANCE_FACTOR + IMBALANCE_SLACK)
                .max_by(|&a, &b| {
                    let (ea, eb) = (&self.endpoints[a], &self.endpoints[b]);
                    rendezvous_score(first_block, &ea.base, ea.weight).total_cmp(&rendezvous_score(
                        first_block,
                        &eb.base,
                        eb.weight,
                    ))
                })
        })
    }

    /// Weighted round robin over the available endpoints: endpoint `i` gets `weight[i]`
    /// turns in every `sum(weights)`.
    fn round_robin(&self, now: Instant) -> Option<usize> {
        let available: Vec<usize> = (0..self.endpoints.len()).filter(|&i| self.endpoints[i].available(now)).collect();
        let total: u64 = available.iter().map(|&i| u64::from(self.endpoints[i].weight)).sum();
        if total == 0 {
            return None;
        }
        let mut turn = self.turn.fetch_add(1, Ordering::Relaxed) % total;
        for i in available {
            let w = u64::from(self.endpoints[i].weight);
            if turn < w {
                return Some(i);
            }
            turn -= w;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::EndpointConfig;

    fn endpoints(weights: &[u32]) -> Vec<Arc<Endpoint>> {
        weights
            .iter()
            .enumerate()
            .map(|(i, &weight)| {
                Arc::new(Endpoint::new(&EndpointConfig {
                    url: format!("http://127.0.0.1:{}", 10_000 + i),
                    api_key: None,
                    api_key_env: None,
                    weight,
                    max_concurrency: 100,
                }))
            })
            .collect()
    }

    #[test]
    fn hashes_are_chained_over_whole_blocks() {
        let a = block_hashes(b"aaaabbbbcccc", 4);
        let b = block_hashes(b"aaaabbbbdddd!!", 4);
        let c = block_hashes(b"xxxxbbbbcccc", 4);
        assert_eq!(a.len(), 3);
        assert_eq!(b.len(), 3);
        assert_eq!(a[..2], b[..2]);
        assert_ne!(a[2], b[2]);
        assert_ne!(a[1], c[1], "a block's hash depends on the blocks before it");
    }

    #[test]
    fn prompts_sharing_a_prefix_go_where_it_was_served() {
        let router = Router::new(Routing::Prefix, endpoints(&[1, 1, 1]));
        let now = Instant::now();
        let system = "You are a helpful assistant. ".repeat(40);
        let first = block_hashes(format!("{system}Question one?").as_bytes(), 64);
        let home = router.order(&first, now)[0];
        router.served(&first, home);
        // Busy the home endpoint a little: the prefix still wins.
        let _busy = router.endpoints()[home].acquire();
        let second = block_hashes(format!("{system}Another question entirely").as_bytes(), 64);
        assert_eq!(router.order(&second, now)[0], home);
        // A new prefix goes to its own rendezvous endpoint, which another router (another
        // replica, with another history) picks too.
        let other = block_hashes("Something else altogether. ".repeat(40).as_bytes(), 64);
        let replica = Router::new(Routing::Prefix, endpoints(&[1, 1, 1]));
        assert_eq!(router.order(&other, now)[0], replica.order(&other, now)[0]);
    }

    /// An engine's prefix cache, for the simulation below: the block chains it computed.
    #[derive(Default)]
    struct Cache(std::collections::HashSet<u64>);

    impl Cache {
        /// Serves a prompt: the leading blocks it already holds are hits; it keeps them all.
        fn serve(&mut self, hashes: &[u64]) -> usize {
            let hits = hashes.iter().take_while(|h| self.0.contains(h)).count();
            self.0.extend(hashes.iter().copied());
            hits
        }
    }

    /// The fraction of prompt blocks served from an engine's cache when `replicas` gateways
    /// share 4 endpoints, each request going to the next replica (a round-robin load
    /// balancer): 40 conversations (a 2 KB document each), 10 questions each, interleaved.
    /// Also returns the requests each endpoint served.
    fn fleet_hit_rate(replicas: usize) -> (f64, Vec<usize>) {
        let routers: Vec<Router> = (0..replicas).map(|_| Router::new(Routing::Prefix, endpoints(&[1; 4]))).collect();
        let mut caches: Vec<Cache> = (0..4).map(|_| Cache::default()).collect();
        let now = Instant::now();
        let (mut hits, mut blocks, mut served) = (0, 0, vec![0; 4]);
        let mut rng = 0x2545_f491_4f6c_dd1d_u64;
        for n in 0..400 {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let conversation = rng % 40;
            let document = format!("Document {conversation}: ").repeat(120);
            let hashes = block_hashes(format!("{document}Question {n}?").as_bytes(), 256);
            let router = &routers[n % replicas];
            let endpoint = router.order(&hashes, now)[0];
            router.served(&hashes, endpoint);
            hits += caches[endpoint].serve(&hashes);
            served[endpoint] += 1;
            blocks += hashes.len();
        }
        (hits as f64 / blocks as f64, served)
    }

    #[test]
    fn three_replicas_keep_the_cache_hit_rate_of_one() {
        let ((one, _), (three, served)) = (fleet_hit_rate(1), fleet_hit_rate(3));
        assert!(one > 0.8, "one replica: {one:.3}");
        assert!(one - three <= 0.05, "one replica {one:.3}, three {three:.3}");
        // And the conversations still spread over the fleet.
        assert!(served.iter().all(|&n| (40..=200).contains(&n)), "requests per endpoint: {served:?}");
    }

    #[test]
    fn a_prefix_is_not_followed_to_an_overloaded_endpoint() {
        let router = Router::new(Routing::Prefix, endpoints(&[1, 1]));
        let now = Instant::now();
        let prompt = block_hashes("shared prefix text ".repeat(30).as_bytes(), 64);
        router.served(&prompt, 0);
        let _held: Vec<_> = (0..10).filter_map(|_| router.endpoints()[0].acquire()).collect();
        assert_eq!(router.order(&prompt, now), vec![1, 0]);
    }

    #[test]
    fn round_robin_follows_weights_and_least_loaded_follows_load() {
        let router = Router::new(Routing::RoundRobin, endpoints(&[2, 1]));
        let now = Instant::now();
        let firsts: Vec<usize> = (0..6).map(|_| router.order(&[], now)[0]).collect();
        assert_eq!(firsts.iter().filter(|&&i| i == 0).count(), 4);
        let router = Router::new(Routing::LeastLoaded, endpoints(&[1, 1, 1]));
        let _a = router.endpoints()[0].acquire();
        let _b = router.endpoints()[2].acquire();
        assert_eq!(router.order(&[], now)[0], 1);
    }
}
