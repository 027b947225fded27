//! Inference API keys: shown once at creation, stored as public id + digest, checked on
//! every inference request through a small cache that deletions invalidate at once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use tm_money::UnixMs;
use tm_store::api_keys::ApiKeyRow;

use crate::activity::{action, resource, Actor, Event};
use crate::changes::Change;
use crate::secret::{self, Kind};
use crate::{millis, Control, ControlError, Principal, Role};

const MAX_NAME_CHARS: usize = 200;
const MAX_SCOPES: usize = 32;
/// Live keys one user may have.
pub const MAX_KEYS_PER_USER: usize = 100;
const MAX_CACHED: usize = 10_000;

/// An API key as its owner sees it: the public id and what it may do, never the digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    pub public_id: String,
    pub user_id: String,
    pub name: String,
    pub scopes: Vec<String>,
    pub created_at: UnixMs,
    pub expires_at: Option<UnixMs>,
    pub deleted_at: Option<UnixMs>,
}

impl From<ApiKeyRow> for ApiKey {
    fn from(r: ApiKeyRow) -> ApiKey {
        ApiKey {
            // Written only by `insert_key`, from a list of strings.
            scopes: serde_json::from_str(&r.scopes).unwrap_or_default(),
            public_id: r.public_id,
            user_id: r.user_id,
            name: r.name,
            created_at: UnixMs(r.created_at),
            expires_at: r.expires_at.map(UnixMs),
            deleted_at: r.deleted_at.map(UnixMs),
        }
    }
}

/// A key just made: `token` is the secret, returned once.
#[derive(Debug)]
pub struct CreatedKey {
    pub key: ApiKey,
    pub token: String,
}

/// Who presented an API key, and which key (its public id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyHolder {
    pub principal: Principal,
    pub key_id: String,
}

#[derive(Debug, Clone)]
struct Cached {
    digest: String,
    principal: Principal,
    expires_at: Option<i64>,
    fetched_at: i64,
}

/// Recent key checks by public id.
#[derive(Debug, Default)]
pub(crate) struct KeyCache {
    entries: Mutex<HashMap<String, Cached>>,
    /// Counts forgets: a check read from the database before one is not cached after it
    /// (it may be the key being deleted).
    forgets: AtomicU64,
}

impl KeyCache {
    fn get(&self, public_id: &str) -> Option<Cached> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner).get(public_id).cloned()
    }

    /// How many forgets so far; give it to [`KeyCache::put`].
    fn epoch(&self) -> u64 {
        self.forgets.load(Ordering::Acquire)
    }

    /// Caches a check read from the database when `epoch` was current, unless a forget
    /// came since.
    fn put(&self, public_id: String, entry: Cached, epoch: u64) {
        let mut map = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if self.forgets.load(Ordering::Acquire) != epoch {
            return;
        }
        if map.len() >= MAX_CACHED {
            map.clear();
        }
        map.insert(public_id, entry);
    }

    pub(crate) fn forget(&self, public_id: &str) {
        let mut map = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        self.forgets.fetch_add(1, Ordering::AcqRel);
        map.remove(public_id);
    }

    pub(crate) fn clear(&self) {
        let mut map = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        self.forgets.fetch_add(1, Ordering::AcqRel);
        map.clear();
    }
}

/// Inference API keys: made, listed, revoked, and checked on every request.
#[derive(Clone, Copy)]
pub struct Keys<'c> {
    pub(crate) control: &'c Control,
}

impl Keys<'_> {
    pub async fn create(
        &self,
        caller: &Principal,
        user_id: Option<&str>,
        name: String,
        scopes: Vec<String>,
        expires_at: Option<i64>,
    ) -> Result<CreatedKey, ControlError> {
        let issued = secret::issue(Kind::ApiKey);
        let key = self.insert_key(caller, user_id, issued.public_id, issued.digest, name, scopes, expires_at).await?;
        let event = key_event(
            &key.user_id,
            &key.public_id,
            action::API_KEY_CREATED,
            format!("Created API key \"{}\"", key.name),
        );
        self.control.record(Actor::User(caller), event).await;
        Ok(CreatedKey { key, token: issued.token })
    }

    /// Registers a key chosen by the operator (`TENSORMESH_ADMIN_API_KEY`).
    pub async fn import(&self, caller: &Principal, token: &str, name: &str) -> Result<ApiKey, ControlError> {
        if token.len() < 16 || token.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(ControlError::invalid("apiKey", "must be at least 16 characters, without spaces"));
        }
        let presented = secret::parse_api_key(token);
        self.insert_key(caller, None, presented.public_id, presented.digest, name.into(), Vec::new(), None).await
    }

    #[allow(clippy::too_many_arguments)]
    async fn insert_key(
        &self,
        caller: &Principal,
        user_id: Option<&str>,
        public_id: String,
        digest: String,
        name: String,
        scopes: Vec<String>,
        expires_at: Option<i64>,
    ) -> Result<ApiKey, ControlError> {
        let owner = self.control.accounts().get(&caller.scope(user_id)?).await?;
        // An admin reads and revokes anyone's keys, but a key's secret is only ever made
        // for, and shown to, its owner.
        if owner.id != caller.user_id {
            return Err(ControlError::PermissionDenied(
                "API keys are created by their owner; admins may revoke them".into(),
            ));
        }
        if self.control.store.api_keys().of_user(&owner.id, false).await?.len() >= MAX_KEYS_PER_USER {
            return Err(ControlError::FailedPrecondition(format!(
                "you have {MAX_KEYS_PER_USER} API keys, the most one user may have; delete one first"
            )));
        }
        if name.chars().count() > MAX_NAME_CHARS {
            return Err(ControlError::invalid("name", format!("is longer than {MAX_NAME_CHARS} characters")));
        }
        if scopes.len() > MAX_SCOPES || scopes.iter().any(|s| s.is_empty() || s.len() > MAX_NAME_CHARS) {
            return Err(ControlError::invalid("scopes", format!("at most {MAX_SCOPES} non-empty scopes")));
        }
        let now = self.control.now();
        if expires_at.is_some_and(|t| t <= now) {
            return Err(ControlError::invalid("expiresAt", "is in the past"));
        }
        let row = ApiKeyRow {
            public_id,
            digest,
            user_id: owner.id,
            name,
            scopes: serde_json::Value::from(scopes).to_string(),
            created_at: now,
            expires_at,
            deleted_at: None,
        };
        self.control.store.api_keys().insert(&row).await?;
        Ok(row.into())
    }

    pub async fn list(
        &self,
        caller: &Principal,
        user_id: Option<&str>,
        include_deleted: bool,
    ) -> Result<Vec<ApiKey>, ControlError> {
        let owner = caller.scope(user_id)?;
        Ok(self
            .control
            .store
            .api_keys()
            .of_user(&owner, include_deleted)
            .await?
            .into_iter()
            .map(ApiKey::from)
            .collect())
    }

    /// `key` is what the list shows (the public id) or the whole key. Deleting a deleted
    /// key succeeds again (DELETE may be retried); another user's key is not found.
    pub async fn delete(&self, caller: &Principal, user_id: Option<&str>, key: &str) -> Result<(), ControlError> {
        let owner = caller.scope(user_id)?;
        let key = key.trim();
        if key.is_empty() {
            return Err(ControlError::invalid("apiKey", "is required"));
        }
        let public_id = if self.control.store.api_keys().by_public_id(key).await?.is_some() {
            key.to_owned()
        } else {
            secret::parse_api_key(key).public_id
        };
        let live = self.control.store.api_keys().by_public_id(&public_id).await?.filter(|k| k.deleted_at.is_none());
        if self.control.store.api_keys().delete(&owner, &public_id, self.control.now()).await? {
            // After the delete: a check that read the key before it is not cached after.
            self.control.publish(Change::Key(public_id.clone())).await;
            if let Some(k) = live {
                let event =
                    key_event(&owner, &public_id, action::API_KEY_REVOKED, format!("Revoked API key \"{}\"", k.name));
                self.control.record(Actor::User(caller), event).await;
            }
            Ok(())
        } else {
            Err(ControlError::NotFound("API key not found".into()))
        }
    }

    /// The owner of an inference API key, or [`ControlError::Unauthenticated`] for any key
    /// that is unknown, wrong, deleted or expired (one answer for all).
    pub async fn authenticate(&self, token: &str) -> Result<KeyHolder, ControlError> {
        let presented = secret::parse_api_key(token);
        let now = self.control.now();
        let cached = match self.control.key_cache.get(&presented.public_id) {
            Some(c) if now - c.fetched_at < millis(self.control.settings.key_cache_ttl) => c,
            _ => {
                let epoch = self.control.key_cache.epoch();
                let Some(row) = self.control.store.api_keys().by_public_id(&presented.public_id).await? else {
                    return Err(ControlError::Unauthenticated);
                };
                if row.deleted_at.is_some() {
                    return Err(ControlError::Unauthenticated);
                }
                let owner =
                    self.control.store.users().by_id(&row.user_id).await?.ok_or(ControlError::Unauthenticated)?;
                if owner.disabled_at.is_some() {
                    return Err(ControlError::Unauthenticated);
                }
                let role = Role::parse(&owner.role).unwrap_or(Role::User);
                let entry = Cached {
                    digest: row.digest,
                    principal: Principal { user_id: owner.id, role },
                    expires_at: row.expires_at,
                    fetched_at: now,
                };
                self.control.key_cache.put(presented.public_id.clone(), entry.clone(), epoch);
                entry
            }
        };
        let live = cached.expires_at.is_none_or(|t| now < t);
        if live && secret::digests_match(&cached.digest, &presented.digest) {
            Ok(KeyHolder { principal: cached.principal, key_id: presented.public_id })
        } else {
            Err(ControlError::Unauthenticated)
        }
    }
}

fn key_event(owner: &str, public_id: &str, action: &'static str, description: String) -> Event {
    Event {
        owner: owner.to_owned(),
        action,
        resource_type: resource::API_KEY,
        resource_id: public_id.to_owned(),
        description,
        metadata: serde_json::json!({}),
    }
}
