//! The server's own log lines per served model, kept in memory for
//! `GET /v1/observability/deployments/{id}/logs`: a `tracing` layer keeps every event that
//! names a `model` (and, for request lines, the `user` it served), the newest
//! [`PER_MODEL`] per model. Owners read only their model's lines that name them: a line that
//! names no user (a model loaded from a file path, a failure) may be about anyone's request,
//! and only operators (admins) read those.

use std::collections::{HashMap, VecDeque};
use std::fmt::Write;
use std::sync::{Mutex, OnceLock, PoisonError};

use tracing::field::{Field, Visit};
use tracing::level_filters::LevelFilter;
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

pub const PER_MODEL: usize = 10_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Unix ms.
    pub at: i64,
    pub user: Option<String>,
    pub message: String,
}

/// Which lines, in which order.
#[derive(Debug, Clone, Copy)]
pub struct Query<'a> {
    pub model: &'a str,
    /// Only lines naming this user; `None`: every line (an operator).
    pub user: Option<&'a str>,
    pub from: Option<i64>,
    pub to: Option<i64>,
    pub limit: usize,
    pub newest_first: bool,
}

#[derive(Default)]
pub struct ModelLogs(Mutex<HashMap<String, VecDeque<Entry>>>);

impl ModelLogs {
    /// The process's logs (what [`layer`] writes to).
    pub fn global() -> &'static ModelLogs {
        static LOGS: OnceLock<ModelLogs> = OnceLock::new();
        LOGS.get_or_init(ModelLogs::default)
    }

    pub fn push(&self, model: &str, entry: Entry) {
        let mut all = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let lines = all.entry(model.to_owned()).or_default();
        if lines.len() == PER_MODEL {
            lines.pop_front();
        }
        lines.push_back(entry);
    }

    pub fn query(&self, q: Query<'_>) -> Vec<Entry> {
        let all = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(lines) = all.get(q.model) else { return Vec::new() };
        let visible = |e: &&Entry| {
            q.user.is_none_or(|only| e.user.as_deref() == Some(only))
                && q.from.is_none_or(|from| e.at >= from)
                && q.to.is_none_or(|to| e.at < to)
        };
        if q.newest_first {
            lines.iter().rev().filter(visible).take(q.limit).cloned().collect()
        } else {
            lines.iter().filter(visible).take(q.limit).cloned().collect()
        }
    }
}

/// The layer to add to the process's subscriber: it sees only events at INFO and above
/// that have a `model` field (decided once per callsite), so it costs nothing elsewhere.
pub fn layer<S>() -> impl Layer<S>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    let wanted = filter_fn(|m| m.is_event() && *m.level() <= Level::INFO && m.fields().field("model").is_some())
        .with_max_level_hint(LevelFilter::INFO);
    ModelLogLayer.with_filter(wanted)
}

pub struct ModelLogLayer;

impl<S: Subscriber> Layer<S> for ModelLogLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let Some(model) = fields.model else { return };
        let at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        let message = format!("{} {}{}", event.metadata().level(), fields.message, fields.rest);
        ModelLogs::global().push(&model, Entry { at, user: fields.user, message });
    }
}

#[derive(Default)]
struct Fields {
    model: Option<String>,
    user: Option<String>,
    message: String,
    rest: String,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.record(field.name(), value.to_owned());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.record(field.name(), format!("{value:?}"));
    }
}

impl Fields {
    fn record(&mut self, name: &str, value: String) {
        match name {
            "model" => self.model = Some(value),
            "user" => self.user = Some(value),
            "message" => self.message = value,
            other => {
                let _ = write!(self.rest, " {other}={value}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    #[test]
    fn events_naming_a_model_are_kept_and_filtered_by_user() {
        let subscriber = tracing_subscriber::registry().with(layer());
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(model = "unit/m", user = "u1", tokens = 3, "request finished");
            tracing::info!(model = "unit/m", user = "u2", "request finished");
            tracing::info!(model = "unit/m", "model ready");
            tracing::info!("no model");
        });
        let q = Query { model: "unit/m", user: Some("u1"), from: None, to: None, limit: 10, newest_first: true };
        let got: Vec<String> = ModelLogs::global().query(q).into_iter().map(|e| e.message).collect();
        assert_eq!(got, ["INFO request finished tokens=3"], "a tenant reads only the lines that name them");
        let all = ModelLogs::global().query(Query { user: None, newest_first: false, ..q });
        let got: Vec<&str> = all.iter().map(|e| e.message.as_str()).collect();
        assert_eq!(got, ["INFO request finished tokens=3", "INFO request finished", "INFO model ready"]);
        let oldest = ModelLogs::global().query(Query { user: None, newest_first: false, limit: 1, ..q });
        assert_eq!(oldest[0].message, "INFO request finished tokens=3");
    }
}
