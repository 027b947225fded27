//! A user's billing address, stored as given (each field trimmed and bounded).

use serde_json::json;
use tm_store::addresses::AddressRow;

use super::Billing;
use crate::activity::{action, resource, Actor, Event};
use crate::{ControlError, Principal};

const MAX_FIELD_CHARS: usize = 300;

/// The address fields; None is stored as empty.
#[derive(Debug, Clone, Default)]
pub struct Address {
    pub name: Option<String>,
    pub company: Option<String>,
    pub line1: Option<String>,
    pub line2: Option<String>,
    pub city: Option<String>,
    pub state: Option<String>,
    pub postal_code: Option<String>,
    pub country: Option<String>,
    pub phone: Option<String>,
}

impl Billing<'_> {
    /// The user's address; one never set is all empty.
    pub async fn address(&self, caller: &Principal, user_id: Option<&str>) -> Result<AddressRow, ControlError> {
        let user = caller.scope(user_id)?;
        let found = self.control.store.addresses().get(&user).await?;
        Ok(found.unwrap_or(AddressRow { user_id: user, ..AddressRow::default() }))
    }

    /// Replaces the user's address.
    pub async fn set_address(&self, caller: &Principal, user_id: Option<&str>, a: Address) -> Result<(), ControlError> {
        let user = self.control.accounts().get(&caller.scope(user_id)?).await?;
        let field = |name: &'static str, v: Option<String>| -> Result<String, ControlError> {
            let v = v.unwrap_or_default().trim().to_owned();
            if v.chars().count() > MAX_FIELD_CHARS {
                return Err(ControlError::invalid(name, format!("is longer than {MAX_FIELD_CHARS} characters")));
            }
            Ok(v)
        };
        let row = AddressRow {
            user_id: user.id.clone(),
            name: field("address.name", a.name)?,
            company: field("address.company", a.company)?,
            line1: field("address.line1", a.line1)?,
            line2: field("address.line2", a.line2)?,
            city: field("address.city", a.city)?,
            state: field("address.state", a.state)?,
            postal_code: field("address.postalCode", a.postal_code)?,
            country: field("address.country", a.country)?,
            phone: field("address.phone", a.phone)?,
            updated_at: self.control.now(),
        };
        self.control.store.addresses().put(&row).await?;
        let event = Event {
            owner: user.id.clone(),
            action: action::ADDRESS_UPDATED,
            resource_type: resource::BILLING_ADDRESS,
            resource_id: user.id,
            description: "Updated the billing address".into(),
            metadata: json!({"country": row.country}),
        };
        self.control.record(Actor::User(caller), event).await;
        Ok(())
    }
}
