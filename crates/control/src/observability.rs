//! A user's request metrics as time series, folded from the usage records the gateway
//! settles (one record per served request).

use tm_store::usage::StepTotals;

use crate::{Control, ControlError, Principal};

const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 24 * HOUR_MS;
/// Points per series at most (Prometheus' own limit for a range query).
pub const MAX_POINTS: i64 = 11_000;

/// Which window, at which resolution; None takes the default (the last 24 hours, hourly).
#[derive(Debug, Clone, Copy, Default)]
pub struct Window {
    pub start_ms: Option<i64>,
    pub end_ms: Option<i64>,
    pub step_seconds: Option<i64>,
}

/// One named series: a value per step, every step of the window (empty steps are 0).
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub name: &'static str,
    /// (step start in Unix ms, value).
    pub points: Vec<(i64, f64)>,
}

/// The series, in the order they are returned.
const NAMES: [&str; 6] = ["requests", "errors", "input_tokens", "cached_tokens", "output_tokens", "latency_ms"];

/// A user's request metrics.
#[derive(Clone, Copy)]
pub struct Observability<'c> {
    pub(crate) control: &'c Control,
}

impl Observability<'_> {
    pub async fn of_user(
        &self,
        caller: &Principal,
        user_id: Option<&str>,
        w: Window,
    ) -> Result<Vec<Series>, ControlError> {
        let user = caller.scope(user_id)?;
        self.metrics(&user, None, w).await
    }

    /// The owner's requests to the deployment's model.
    pub async fn of_deployment(&self, caller: &Principal, id: &str, w: Window) -> Result<Vec<Series>, ControlError> {
        let d = self.control.deployments().get(caller, id).await?;
        self.metrics(&d.user_id, Some(&d.model_path), w).await
    }

    async fn metrics(&self, user: &str, model: Option<&str>, w: Window) -> Result<Vec<Series>, ControlError> {
        let end = w.end_ms.unwrap_or_else(|| self.control.now());
        let start = w.start_ms.unwrap_or(end - DAY_MS);
        if start >= end {
            return Err(ControlError::invalid("startTime", "must be before endTime"));
        }
        let step_ms = match w.step_seconds {
            None => HOUR_MS,
            Some(s) if s >= 1 => s.saturating_mul(1000),
            Some(_) => return Err(ControlError::invalid("stepSeconds", "must be at least 1")),
        };
        let steps = (end - start) / step_ms + i64::from((end - start) % step_ms != 0);
        if steps > MAX_POINTS {
            return Err(ControlError::invalid(
                "stepSeconds",
                format!("gives {steps} points for this window; at most {MAX_POINTS} (use a larger step)"),
            ));
        }
        let totals = self.control.store.usage().step_totals(user, model, start, end, step_ms).await?;
        Ok(series(&totals, start, step_ms, steps))
    }
}

fn series(totals: &[StepTotals], start: i64, step_ms: i64, steps: i64) -> Vec<Series> {
    let mut out: Vec<Series> = NAMES
        .iter()
        .map(|name| Series { name, points: (0..steps).map(|i| (start + i * step_ms, 0.0)).collect() })
        .collect();
    for t in totals {
        let Some(i) = usize::try_from(t.step).ok().filter(|i| *i < out[0].points.len()) else { continue };
        let mean_latency = if t.requests > 0 { t.latency_ms as f64 / t.requests as f64 } else { 0.0 };
        let values = [
            t.requests as f64,
            t.errors as f64,
            t.prompt_tokens as f64,
            t.cached_tokens as f64,
            t.completion_tokens as f64,
            mean_latency,
        ];
        for (s, v) in out.iter_mut().zip(values) {
            s.points[i].1 = v;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_step_has_a_point_and_latency_is_the_mean() {
        let t = StepTotals {
            step: 1,
            requests: 4,
            errors: 1,
            prompt_tokens: 40,
            cached_tokens: 8,
            completion_tokens: 20,
            latency_ms: 1000,
        };
        let s = series(&[t], 1_000, 60_000, 3);
        assert_eq!(s.iter().map(|s| s.name).collect::<Vec<_>>(), NAMES);
        assert_eq!(s[0].points, vec![(1_000, 0.0), (61_000, 4.0), (121_000, 0.0)]);
        assert_eq!(s[3].points[1].1, 8.0);
        assert_eq!(s[5].points[1].1, 250.0);
    }
}
