//! What the upstream backend reports on the Prometheus endpoint: attempts per endpoint and
//! outcome, retries, ejections, endpoint health, and usage the gateway had to count itself.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, String)>;

#[derive(Debug, Clone, Default)]
pub struct UpstreamMetrics {
    attempts: Family<Labels, Counter>,
    retries: Family<Labels, Counter>,
    ejections: Family<Labels, Counter>,
    healthy: Family<Labels, Gauge>,
    usage_counted: Family<Labels, Counter>,
}

impl UpstreamMetrics {
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("upstream");
        r.register("attempts", "Requests sent to upstream endpoints, by outcome", self.attempts.clone());
        r.register("retries", "Requests sent again to another endpoint before the first byte", self.retries.clone());
        r.register("ejections", "Endpoints ejected after failing requests in a row", self.ejections.clone());
        r.register("endpoint_healthy", "1 while an endpoint takes requests", self.healthy.clone());
        r.register(
            "usage_counted",
            "Requests whose usage the upstream did not report, counted by its tokenizer or estimated",
            self.usage_counted.clone(),
        );
    }

    pub fn attempt(&self, model: &str, endpoint: &str, outcome: &'static str) {
        self.attempts
            .get_or_create(&vec![("model", model.into()), ("endpoint", endpoint.into()), ("outcome", outcome.into())])
            .inc();
    }

    pub fn retry(&self, model: &str) {
        self.retries.get_or_create(&vec![("model", model.into())]).inc();
    }

    pub fn ejected(&self, model: &str, endpoint: &str) {
        self.ejections.get_or_create(&vec![("model", model.into()), ("endpoint", endpoint.into())]).inc();
    }

    pub fn set_healthy(&self, model: &str, endpoint: &str, healthy: bool) {
        self.healthy
            .get_or_create(&vec![("model", model.into()), ("endpoint", endpoint.into())])
            .set(i64::from(healthy));
    }

    pub fn usage_counted(&self, model: &str, how: &'static str) {
        self.usage_counted.get_or_create(&vec![("model", model.into()), ("how", how.into())]).inc();
    }
}
