//! The product catalogue: deployment offerings (GPU count, family, spec) that admins
//! manage and every signed-in user can read.

use serde_json::{json, Map, Value};
use tm_money::UnixMs;
use tm_store::products::ProductRow;

use crate::activity::{action, resource, Actor, Event};
use crate::{Control, ControlError, Principal};

const MAX_NAME_CHARS: usize = 200;
const MAX_GPUS: i64 = 4096;
const MAX_SPEC_BYTES: usize = 64 * 1024;

/// A deployment offering of the catalogue.
#[derive(Debug, Clone, PartialEq)]
pub struct Product {
    pub id: String,
    pub name: String,
    pub required_gpu_num: i64,
    pub family: String,
    pub is_active: bool,
    /// A JSON object.
    pub spec: Value,
    pub created_at: UnixMs,
    pub updated_at: UnixMs,
}

impl From<ProductRow> for Product {
    fn from(r: ProductRow) -> Product {
        Product {
            spec: serde_json::from_str(&r.spec).unwrap_or_else(|_| Value::Object(Map::new())),
            is_active: r.is_active != 0,
            id: r.id,
            name: r.name,
            required_gpu_num: r.required_gpu_num,
            family: r.family,
            created_at: UnixMs(r.created_at),
            updated_at: UnixMs(r.updated_at),
        }
    }
}

/// A product as an admin writes it. On create `name` is required; on update (the `id`
/// exists) what is None keeps its value.
#[derive(Debug, Clone, Default)]
pub struct ProductPatch {
    pub id: Option<String>,
    pub name: Option<String>,
    pub required_gpu_num: Option<i64>,
    pub family: Option<String>,
    pub is_active: Option<bool>,
    pub spec: Option<Map<String, Value>>,
}

/// The product catalogue.
#[derive(Clone, Copy)]
pub struct Products<'c> {
    pub(crate) control: &'c Control,
}

impl Products<'_> {
    /// Active products for users; admins see inactive ones too when they ask.
    pub async fn list(&self, caller: &Principal, include_inactive: bool) -> Result<Vec<Product>, ControlError> {
        if include_inactive {
            caller.require_admin()?;
        }
        Ok(self.control.store.products().list(!include_inactive).await?.into_iter().map(Product::from).collect())
    }

    pub async fn upsert(&self, caller: &Principal, patch: ProductPatch) -> Result<Product, ControlError> {
        caller.require_admin()?;
        let id = patch.id.as_deref().map(str::trim).filter(|id| !id.is_empty()).map(str::to_owned);
        let old = match &id {
            Some(id) => self.control.store.products().by_id(id).await?,
            None => None,
        };
        let now = self.control.now();
        let name = match (patch.name, &old) {
            (Some(n), _) => n.trim().to_owned(),
            (None, Some(old)) => old.name.clone(),
            (None, None) => String::new(),
        };
        if name.is_empty() {
            return Err(ControlError::invalid("product.name", "is required"));
        }
        if name.chars().count() > MAX_NAME_CHARS {
            return Err(ControlError::invalid("product.name", format!("is longer than {MAX_NAME_CHARS} characters")));
        }
        let gpus = patch.required_gpu_num.or(old.as_ref().map(|o| o.required_gpu_num)).unwrap_or(0);
        if !(0..=MAX_GPUS).contains(&gpus) {
            return Err(ControlError::invalid("product.requiredGpuNum", format!("must be from 0 to {MAX_GPUS}")));
        }
        let spec = match patch.spec {
            Some(spec) => Value::Object(spec).to_string(),
            None => old.as_ref().map_or_else(|| "{}".to_owned(), |o| o.spec.clone()),
        };
        if spec.len() > MAX_SPEC_BYTES {
            return Err(ControlError::invalid("product.spec", format!("is larger than {MAX_SPEC_BYTES} bytes")));
        }
        let row = ProductRow {
            id: id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
            name,
            required_gpu_num: gpus,
            family: patch
                .family
                .map(|f| f.trim().to_owned())
                .or(old.as_ref().map(|o| o.family.clone()))
                .unwrap_or_default(),
            is_active: i64::from(patch.is_active.unwrap_or(old.as_ref().is_none_or(|o| o.is_active != 0))),
            spec,
            created_at: old.as_ref().map_or(now, |o| o.created_at),
            updated_at: now,
        };
        self.control.store.products().upsert(&row).await?;
        let verb = if old.is_some() { "Updated" } else { "Created" };
        let event = product_event(caller, &row, action::PRODUCT_UPSERTED, format!("{verb} product \"{}\"", row.name));
        self.control.record(Actor::User(caller), event).await;
        Ok(row.into())
    }

    pub async fn delete(&self, caller: &Principal, id: &str) -> Result<(), ControlError> {
        caller.require_admin()?;
        let Some(row) = self.control.store.products().by_id(id.trim()).await? else {
            return Err(ControlError::NotFound(format!("product {id} not found")));
        };
        if self.control.store.products().delete(&row.id).await? {
            let event =
                product_event(caller, &row, action::PRODUCT_DELETED, format!("Deleted product \"{}\"", row.name));
            self.control.record(Actor::User(caller), event).await;
        }
        Ok(())
    }
}

fn product_event(caller: &Principal, row: &ProductRow, action: &'static str, description: String) -> Event {
    Event {
        owner: caller.user_id.clone(),
        action,
        resource_type: resource::PRODUCT,
        resource_id: row.id.clone(),
        description,
        metadata: json!({"name": row.name}),
    }
}
