//! Hourly GPU prices per cloud provider: anyone signed in reads them, admins write them.

use serde_json::json;
use tm_money::{Nanos, UnixMs};
use tm_store::gpu_pricing::GpuPriceRow;

use crate::activity::{action, resource, Actor, Event};
use crate::{Control, ControlError, Principal};

/// The clouds the clients know (`CLOUD_PROVIDER_*`).
pub const CLOUD_PROVIDERS: [&str; 3] = ["CLOUD_PROVIDER_NEBIUS", "CLOUD_PROVIDER_LAMBDA", "CLOUD_PROVIDER_YOTTA"];

/// The hourly price of one GPU type on one cloud.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuPrice {
    pub gpu_type: String,
    pub cloud_provider: String,
    pub hourly_rate: Nanos,
    pub is_active: bool,
    pub created_at: UnixMs,
    pub updated_at: UnixMs,
}

impl From<GpuPriceRow> for GpuPrice {
    fn from(r: GpuPriceRow) -> GpuPrice {
        GpuPrice {
            gpu_type: r.gpu_type,
            cloud_provider: r.cloud_provider,
            hourly_rate: Nanos(r.hourly_rate_nanos),
            is_active: r.is_active != 0,
            created_at: UnixMs(r.created_at),
            updated_at: UnixMs(r.updated_at),
        }
    }
}

/// A GPU price as an admin writes it; on update what is None keeps its value.
#[derive(Debug, Clone, Default)]
pub struct GpuPricePatch {
    pub gpu_type: String,
    pub cloud_provider: String,
    pub hourly_rate_nanos: Option<i64>,
    pub is_active: Option<bool>,
}

/// Hourly GPU prices of reserved deployments, per GPU type and cloud.
#[derive(Clone, Copy)]
pub struct GpuPricing<'c> {
    pub(crate) control: &'c Control,
}

impl GpuPricing<'_> {
    pub async fn list(
        &self,
        gpu_type: Option<&str>,
        cloud_provider: Option<&str>,
        active_only: bool,
    ) -> Result<Vec<GpuPrice>, ControlError> {
        let gpu_type = gpu_type.map(|g| gpu_type_name("gpuType", g)).transpose()?;
        let cloud = cloud_provider.map(|c| cloud_name("cloudProvider", c)).transpose()?;
        let rows = self.control.store.gpu_pricing().list(gpu_type.as_deref(), cloud, active_only).await?;
        Ok(rows.into_iter().map(GpuPrice::from).collect())
    }

    pub async fn create(&self, caller: &Principal, p: GpuPricePatch) -> Result<GpuPrice, ControlError> {
        caller.require_admin()?;
        let now = self.control.now();
        let row = GpuPriceRow {
            gpu_type: gpu_type_name("pricing.gpuType", &p.gpu_type)?,
            cloud_provider: cloud_name("pricing.cloudProvider", &p.cloud_provider)?.into(),
            hourly_rate_nanos: rate(
                p.hourly_rate_nanos.ok_or(ControlError::invalid("pricing.hourlyRate", "is required"))?,
            )?,
            is_active: i64::from(p.is_active.unwrap_or(true)),
            created_at: now,
            updated_at: now,
        };
        self.control.store.gpu_pricing().insert(&row).await.map_err(|e| match e {
            tm_store::StoreError::Conflict(_) => ControlError::AlreadyExists(format!(
                "{} on {} has a price already; update it with PUT",
                row.gpu_type, row.cloud_provider
            )),
            other => other.into(),
        })?;
        self.control.record(Actor::User(caller), gpu_event(caller, &row, action::PRICING_CREATED, "Created")).await;
        Ok(row.into())
    }

    pub async fn update(&self, caller: &Principal, p: GpuPricePatch) -> Result<GpuPrice, ControlError> {
        caller.require_admin()?;
        let gpu_type = gpu_type_name("pricing.gpuType", &p.gpu_type)?;
        let cloud = cloud_name("pricing.cloudProvider", &p.cloud_provider)?;
        let old = self
            .control
            .store
            .gpu_pricing()
            .get(&gpu_type, cloud)
            .await?
            .ok_or_else(|| ControlError::NotFound(format!("no price for {gpu_type} on {cloud}")))?;
        let row = GpuPriceRow {
            hourly_rate_nanos: p.hourly_rate_nanos.map(rate).transpose()?.unwrap_or(old.hourly_rate_nanos),
            is_active: p.is_active.map_or(old.is_active, i64::from),
            updated_at: self.control.now(),
            ..old
        };
        self.control.store.gpu_pricing().update(&row).await?;
        self.control.record(Actor::User(caller), gpu_event(caller, &row, action::PRICING_UPDATED, "Updated")).await;
        Ok(row.into())
    }

    /// Deleting a price that is gone already succeeds (DELETE may be retried).
    pub async fn delete(&self, caller: &Principal, gpu_type: &str, cloud: &str) -> Result<(), ControlError> {
        caller.require_admin()?;
        let gpu_type = gpu_type_name("gpuType", gpu_type)?;
        let cloud = cloud_name("cloudProvider", cloud)?;
        if let Some(row) = self.control.store.gpu_pricing().get(&gpu_type, cloud).await? {
            self.control.store.gpu_pricing().delete(&gpu_type, cloud).await?;
            self.control.record(Actor::User(caller), gpu_event(caller, &row, action::PRICING_DELETED, "Deleted")).await;
        }
        Ok(())
    }
}

/// `GPU_TYPE_<NAME>` (upper-case letters, digits, `_`); `h100` reads as `GPU_TYPE_H100`.
fn gpu_type_name(field: &'static str, value: &str) -> Result<String, ControlError> {
    let upper = value.trim().to_ascii_uppercase();
    let name = upper.strip_prefix("GPU_TYPE_").unwrap_or(&upper);
    if name.is_empty() || name == "UNSPECIFIED" || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(ControlError::invalid(field, format!("{value:?} is not a GPU type such as GPU_TYPE_H100")));
    }
    Ok(format!("GPU_TYPE_{name}"))
}

fn cloud_name(field: &'static str, value: &str) -> Result<&'static str, ControlError> {
    let upper = value.trim().to_ascii_uppercase();
    let name = upper.strip_prefix("CLOUD_PROVIDER_").unwrap_or(&upper);
    CLOUD_PROVIDERS
        .iter()
        .copied()
        .find(|c| c.strip_prefix("CLOUD_PROVIDER_") == Some(name))
        .ok_or_else(|| ControlError::invalid(field, format!("{value:?} is not one of {}", CLOUD_PROVIDERS.join(", "))))
}

fn rate(nanos: i64) -> Result<i64, ControlError> {
    if nanos < 0 {
        return Err(ControlError::invalid("pricing.hourlyRate", "must not be negative"));
    }
    Ok(nanos)
}

fn gpu_event(caller: &Principal, row: &GpuPriceRow, action: &'static str, verb: &str) -> Event {
    Event {
        owner: caller.user_id.clone(),
        action,
        resource_type: resource::GPU_PRICING,
        resource_id: format!("{}/{}", row.gpu_type, row.cloud_provider),
        description: format!("{verb} the hourly price of {} on {}", row.gpu_type, row.cloud_provider),
        metadata: json!({"hourlyRateNanos": row.hourly_rate_nanos.to_string()}),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enum_names_are_normalised_and_checked() {
        assert_eq!(gpu_type_name("g", "h100").ok().as_deref(), Some("GPU_TYPE_H100"));
        assert_eq!(gpu_type_name("g", "GPU_TYPE_B200").ok().as_deref(), Some("GPU_TYPE_B200"));
        assert!(gpu_type_name("g", "GPU_TYPE_UNSPECIFIED").is_err());
        assert!(gpu_type_name("g", "h 100").is_err());
        assert_eq!(cloud_name("c", "lambda").ok(), Some("CLOUD_PROVIDER_LAMBDA"));
        assert!(cloud_name("c", "aws").is_err());
    }
}
