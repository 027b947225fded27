//! Deployments, the Control Plane's "models": a user's named handle on a model this
//! installation serves. Users see and delete their own (another user's is "not found"),
//! admins everyone's. Whether one is up is the serving side's answer, not stored here.

use serde_json::{json, Map, Value};
use tm_money::UnixMs;
use tm_store::deployments::DeploymentRow;

use crate::activity::{action, resource, visible_owner, Actor, Event};
use crate::{Control, ControlError, Principal};

const MAX_NAME_CHARS: usize = 100;
const MAX_DESCRIPTION_CHARS: usize = 2_000;
const MAX_JSON_BYTES: usize = 64 * 1024;
/// Live deployments one user may have.
pub const MAX_DEPLOYMENTS_PER_USER: i64 = 100;

/// A user's named handle on a served model (deleted ones keep their time of deletion).
#[derive(Debug, Clone, PartialEq)]
pub struct Deployment {
    pub id: String,
    pub user_id: String,
    pub model_name: String,
    /// The served model it runs.
    pub model_path: String,
    pub description: String,
    pub model_spec: Map<String, Value>,
    pub infra: Map<String, Value>,
    pub gpu_count: i64,
    pub gpu_type: String,
    pub created_at: UnixMs,
    pub updated_at: UnixMs,
    pub deleted_at: Option<UnixMs>,
}

impl From<DeploymentRow> for Deployment {
    fn from(r: DeploymentRow) -> Deployment {
        Deployment {
            // Written only by `create`, from JSON objects.
            model_spec: serde_json::from_str(&r.model_spec).unwrap_or_default(),
            infra: serde_json::from_str(&r.infra).unwrap_or_default(),
            id: r.id,
            user_id: r.user_id,
            model_name: r.model_name,
            model_path: r.model_path,
            description: r.description,
            gpu_count: r.gpu_count,
            gpu_type: r.gpu_type,
            created_at: UnixMs(r.created_at),
            updated_at: UnixMs(r.updated_at),
            deleted_at: r.deleted_at.map(UnixMs),
        }
    }
}

/// A deployment as a user asks for it.
#[derive(Debug, Clone, Default)]
pub struct NewDeployment {
    pub user_id: Option<String>,
    pub model_name: String,
    /// The served model to run; the name when absent.
    pub model_path: Option<String>,
    pub description: Option<String>,
    pub model_spec: Option<Map<String, Value>>,
    pub infra: Option<Map<String, Value>>,
    pub gpu_count: Option<i64>,
    pub gpu_type: Option<String>,
}

/// Users' named handles on served models.
#[derive(Clone, Copy)]
pub struct Deployments<'c> {
    pub(crate) control: &'c Control,
}

impl Deployments<'_> {
    /// `served`: the ids of the models this installation serves.
    pub async fn create(
        &self,
        caller: &Principal,
        d: NewDeployment,
        served: &[String],
    ) -> Result<Deployment, ControlError> {
        let owner = self.control.accounts().get(&caller.scope(d.user_id.as_deref())?).await?.id;
        let name = deployment_name("modelName", &d.model_name)?;
        if self.control.store.deployments().page(Some(&owner), 0, 1).await?.1 >= MAX_DEPLOYMENTS_PER_USER {
            return Err(ControlError::FailedPrecondition(format!(
                "you have {MAX_DEPLOYMENTS_PER_USER} deployments, the most one user may have; delete one first"
            )));
        }
        let path = d.model_path.map(|p| p.trim().to_owned()).filter(|p| !p.is_empty()).unwrap_or_else(|| name.clone());
        if !served.contains(&path) {
            return Err(ControlError::invalid(
                "modelPath",
                format!("{path:?} is not a model this installation serves; it serves {}", served.join(", ")),
            ));
        }
        let description = d.description.unwrap_or_default();
        if description.chars().count() > MAX_DESCRIPTION_CHARS {
            return Err(ControlError::invalid(
                "description",
                format!("is longer than {MAX_DESCRIPTION_CHARS} characters"),
            ));
        }
        let gpu_count = d.gpu_count.unwrap_or(0);
        if !(0..=1024).contains(&gpu_count) {
            return Err(ControlError::invalid("gpuCount", "must be from 0 to 1024"));
        }
        let now = self.control.now();
        let row = DeploymentRow {
            id: uuid::Uuid::new_v4().to_string(),
            user_id: owner,
            model_name: name,
            model_path: path,
            description,
            model_spec: bounded_json("modelSpec", d.model_spec)?,
            infra: bounded_json("infra", d.infra)?,
            gpu_count,
            gpu_type: d.gpu_type.unwrap_or_default().trim().to_owned(),
            created_at: now,
            updated_at: now,
            deleted_at: None,
        };
        self.control.store.deployments().insert(&row).await.map_err(|e| match e {
            tm_store::StoreError::Conflict(_) => {
                ControlError::AlreadyExists(format!("you already have a deployment named {:?}", row.model_name))
            }
            other => other.into(),
        })?;
        let created = Deployment::from(row);
        self.control.record(Actor::User(caller), event(&created, action::DEPLOYMENT_CREATED, "Deployed")).await;
        Ok(created)
    }

    /// Live deployments: the caller's own, or (admins) the named user's or everyone's.
    pub async fn list(&self, caller: &Principal, user_id: Option<&str>) -> Result<Vec<Deployment>, ControlError> {
        Ok(self.page(caller, user_id, 1, i64::MAX).await?.0)
    }

    /// Admins: a page of live deployments of everyone (or the named user).
    pub async fn page(
        &self,
        caller: &Principal,
        user_id: Option<&str>,
        page: i64,
        size: i64,
    ) -> Result<(Vec<Deployment>, i64), ControlError> {
        let owner = visible_owner(caller, user_id)?;
        let offset = (page - 1).saturating_mul(size);
        let (rows, total) = self.control.store.deployments().page(owner.as_deref(), offset, size).await?;
        Ok((rows.into_iter().map(Deployment::from).collect(), total))
    }

    /// One deployment (deleted ones too), if the caller may see it.
    pub async fn get(&self, caller: &Principal, id: &str) -> Result<Deployment, ControlError> {
        match self.control.store.deployments().by_id(id.trim()).await? {
            Some(d) if caller.role.is_admin() || d.user_id == caller.user_id => Ok(d.into()),
            _ => Err(ControlError::NotFound(format!("model {id} not found"))),
        }
    }

    /// Deleting a deleted deployment succeeds again (DELETE may be retried).
    pub async fn delete(&self, caller: &Principal, id: &str) -> Result<(), ControlError> {
        let d = self.get(caller, id).await?;
        if self.control.store.deployments().delete(&d.id, self.control.now()).await? {
            self.control.record(Actor::User(caller), event(&d, action::DEPLOYMENT_DELETED, "Deleted deployment")).await;
        }
        Ok(())
    }

    /// Whether `name` is a well-formed name the user has not used for a live deployment.
    pub async fn name_free(&self, caller: &Principal, user_id: Option<&str>, name: &str) -> Result<bool, ControlError> {
        let owner = caller.scope(user_id)?;
        if name.trim().is_empty() {
            return Err(ControlError::invalid("modelName", "is required"));
        }
        match deployment_name("modelName", name) {
            Ok(name) => Ok(self.control.store.deployments().by_name(&owner, &name).await?.is_none()),
            Err(_) => Ok(false),
        }
    }
}

/// 1-100 characters of letters, digits and `-_./:`.
fn deployment_name(field: &'static str, name: &str) -> Result<String, ControlError> {
    let name = name.trim();
    let ok = !name.is_empty()
        && name.chars().count() <= MAX_NAME_CHARS
        && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_./:".contains(c));
    if ok {
        Ok(name.to_owned())
    } else {
        Err(ControlError::invalid(field, format!("must be 1 to {MAX_NAME_CHARS} letters, digits or -_./: characters")))
    }
}

fn bounded_json(field: &'static str, v: Option<Map<String, Value>>) -> Result<String, ControlError> {
    let text = Value::Object(v.unwrap_or_default()).to_string();
    if text.len() > MAX_JSON_BYTES {
        return Err(ControlError::invalid(field, format!("is larger than {MAX_JSON_BYTES} bytes")));
    }
    Ok(text)
}

fn event(d: &Deployment, action: &'static str, verb: &str) -> Event {
    Event {
        owner: d.user_id.clone(),
        action,
        resource_type: resource::DEPLOYMENT,
        resource_id: d.id.clone(),
        description: format!("{verb} {} ({})", d.model_name, d.model_path),
        metadata: json!({"modelName": d.model_name, "modelPath": d.model_path}),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert_eq!(deployment_name("n", " org/model-1.5:q4 ").ok().as_deref(), Some("org/model-1.5:q4"));
        assert!(deployment_name("n", "").is_err());
        assert!(deployment_name("n", "has space").is_err());
        assert!(deployment_name("n", &"x".repeat(101)).is_err());
    }
}
