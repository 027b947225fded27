//! Users: creation (by operators and on first start), profile, terms of service, roles.

use tm_money::UnixMs;
use tm_store::rate_limits::LimitOverride;
use tm_store::users::{ProfileUpdate, UserRow};

use crate::activity::{action, resource, Actor, Event};
use crate::changes::Change;
use crate::{secret, Control, ControlError, Principal, Role};

const MAX_FIELD_CHARS: usize = 200;

/// A user as the domain hands one out: the role parsed, and no password hash (it never
/// leaves this crate).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: String,
    pub email: String,
    pub first_name: String,
    pub last_name: String,
    pub display_name: String,
    pub company: String,
    pub role: Role,
    pub tos_accepted_at: Option<UnixMs>,
    pub created_at: UnixMs,
    pub updated_at: UnixMs,
    /// When an operator disabled the user (sign-ins, tokens and keys refused).
    pub disabled_at: Option<UnixMs>,
}

impl User {
    /// How a person is shown: display name, else full name, else email.
    pub fn shown_name(&self) -> String {
        let full = format!("{} {}", self.first_name.trim(), self.last_name.trim()).trim().to_owned();
        [self.display_name.trim().to_owned(), full]
            .into_iter()
            .find(|n| !n.is_empty())
            .unwrap_or_else(|| self.email.clone())
    }

    pub fn principal(&self) -> Principal {
        Principal { user_id: self.id.clone(), role: self.role }
    }
}

impl From<UserRow> for User {
    fn from(r: UserRow) -> User {
        User {
            // Roles are written only as `Role::as_str`; anything else is treated as the least.
            role: Role::parse(&r.role).unwrap_or(Role::User),
            id: r.id,
            email: r.email,
            first_name: r.first_name,
            last_name: r.last_name,
            display_name: r.display_name,
            company: r.company,
            tos_accepted_at: r.tos_accepted_at.map(UnixMs),
            created_at: UnixMs(r.created_at),
            updated_at: UnixMs(r.updated_at),
            disabled_at: r.disabled_at.map(UnixMs),
        }
    }
}

#[derive(Debug, Clone)]
pub struct NewUser {
    pub email: String,
    pub password: String,
    pub role: Role,
    pub first_name: String,
    pub last_name: String,
}

/// First-start settings (`TENSORMESH_ADMIN_*`); what is missing gets generated.
#[derive(Debug, Clone, Default)]
pub struct Bootstrap {
    pub email: Option<String>,
    pub password: Option<String>,
    pub api_key: Option<String>,
}

/// The first admin, with the secrets that were generated (shown once, never stored).
#[derive(Debug)]
pub struct Bootstrapped {
    pub user: User,
    pub generated_password: Option<String>,
    pub generated_api_key: Option<String>,
}

/// Users: creation, the first admin, profiles, terms of service, roles and limits.
#[derive(Clone, Copy)]
pub struct Accounts<'c> {
    pub(crate) control: &'c Control,
}

impl Accounts<'_> {
    /// Operator command (`tensormesh user create`).
    pub async fn create(&self, new: NewUser) -> Result<User, ControlError> {
        self.create_by(Actor::Operator, new).await
    }

    /// An admin creates an account (the console); only a super admin creates a super admin.
    pub async fn create_as(&self, caller: &Principal, new: NewUser) -> Result<User, ControlError> {
        caller.require_admin()?;
        if new.role == Role::SuperAdmin && caller.role != Role::SuperAdmin {
            return Err(ControlError::PermissionDenied("only a super admin can create a super admin".into()));
        }
        self.create_by(Actor::User(caller), new).await
    }

    async fn create_by(&self, actor: Actor<'_>, new: NewUser) -> Result<User, ControlError> {
        let email = normalize_email(&new.email)?;
        let now = self.control.now();
        let user = UserRow {
            id: uuid::Uuid::new_v4().to_string(),
            password_hash: self.control.hasher.hash(&new.password).await?,
            first_name: bounded("firstName", new.first_name)?,
            last_name: bounded("lastName", new.last_name)?,
            display_name: String::new(),
            company: String::new(),
            role: new.role.as_str().into(),
            tos_accepted_at: None,
            created_at: now,
            updated_at: now,
            disabled_at: None,
            email,
        };
        match self.control.store.users().insert(&user).await {
            Err(tm_store::StoreError::Conflict(_)) => {
                return Err(ControlError::AlreadyExists(format!("a user with email {} already exists", user.email)))
            }
            other => other?,
        }
        let description = format!("Account created for {} ({})", user.email, user.role);
        self.control.record(actor, user_event(&user.id, action::USER_CREATED, description)).await;
        Ok(user.into())
    }

    /// On an empty database, creates the first admin (a super admin) and an API key for it.
    /// Returns `None` when users already exist.
    pub async fn bootstrap(&self, b: Bootstrap) -> Result<Option<Bootstrapped>, ControlError> {
        if self.control.store.users().count().await? > 0 {
            return Ok(None);
        }
        let generated_password = b.password.is_none().then(|| secret::random_base62(20));
        let password = b.password.or_else(|| generated_password.clone()).unwrap_or_default();
        let email = b.email.unwrap_or_else(|| "admin@localhost".into());
        let user = self
            .create(NewUser {
                email,
                password,
                role: Role::SuperAdmin,
                first_name: "Admin".into(),
                last_name: String::new(),
            })
            .await?;
        let principal = Principal { user_id: user.id.clone(), role: Role::SuperAdmin };
        let generated_api_key = match b.api_key {
            Some(key) => {
                self.control.keys().import(&principal, &key, "bootstrap").await?;
                None
            }
            None => {
                Some(self.control.keys().create(&principal, None, "bootstrap".into(), Vec::new(), None).await?.token)
            }
        };
        Ok(Some(Bootstrapped { user, generated_password, generated_api_key }))
    }

    pub async fn get(&self, id: &str) -> Result<User, ControlError> {
        self.control.store.users().by_id(id).await?.map(User::from).ok_or_else(|| not_found(id))
    }

    pub async fn by_email(&self, email: &str) -> Result<User, ControlError> {
        let email = normalize_email(email)?;
        self.control
            .store
            .users()
            .by_email(&email)
            .await?
            .map(User::from)
            .ok_or_else(|| ControlError::NotFound(format!("no user with email {email}")))
    }

    /// The account behind an email and password, for the sign-in page. Unknown emails
    /// and wrong passwords are indistinguishable, in answer and in time.
    pub async fn check_password(&self, email: &str, password: &str) -> Result<User, ControlError> {
        let found = match normalize_email(email) {
            Ok(email) => self.control.store.users().by_email(&email).await?,
            Err(_) => None,
        };
        match found {
            // A disabled user is refused like a wrong password, after the same work.
            Some(user)
                if self.control.hasher.verify(password, &user.password_hash).await? && user.disabled_at.is_none() =>
            {
                Ok(user.into())
            }
            Some(_) => Err(ControlError::Unauthenticated),
            None => {
                self.control.hasher.verify_nothing(password).await?;
                Err(ControlError::Unauthenticated)
            }
        }
    }

    pub async fn accept_tos(&self, caller: &Principal, user_id: Option<&str>) -> Result<User, ControlError> {
        let id = caller.scope(user_id)?;
        let before = self.get(&id).await?;
        let user =
            self.control.store.users().accept_tos(&id, self.control.now()).await?.ok_or_else(|| not_found(&id))?;
        if before.tos_accepted_at.is_none() {
            let event = user_event(&id, action::TOS_ACCEPTED, "Accepted the terms of service".into());
            self.control.record(Actor::User(caller), event).await;
        }
        Ok(user.into())
    }

    pub async fn update_profile(
        &self,
        caller: &Principal,
        user_id: &str,
        update: ProfileUpdate,
    ) -> Result<(), ControlError> {
        let id = caller.scope(Some(user_id))?;
        let update = ProfileUpdate {
            first_name: update.first_name.map(|v| bounded("firstName", v)).transpose()?,
            last_name: update.last_name.map(|v| bounded("lastName", v)).transpose()?,
            display_name: update.display_name.map(|v| bounded("displayName", v)).transpose()?,
            company: update.company.map(|v| bounded("company", v)).transpose()?,
        };
        if update.first_name.is_none()
            && update.last_name.is_none()
            && update.display_name.is_none()
            && update.company.is_none()
        {
            return Err(ControlError::invalid(
                "body",
                "give at least one of firstName, lastName, displayName, company",
            ));
        }
        let changed: Vec<&str> = [
            ("firstName", &update.first_name),
            ("lastName", &update.last_name),
            ("displayName", &update.display_name),
            ("company", &update.company),
        ]
        .into_iter()
        .filter_map(|(name, v)| v.as_ref().map(|_| name))
        .collect();
        if self.control.store.users().update_profile(&id, &update, self.control.now()).await? {
            let mut event = user_event(&id, action::PROFILE_UPDATED, format!("Updated {}", changed.join(", ")));
            event.metadata = serde_json::json!({"fields": changed});
            self.control.record(Actor::User(caller), event).await;
            Ok(())
        } else {
            Err(not_found(&id))
        }
    }

    /// Admins only; 1-based pages.
    pub async fn page(&self, caller: &Principal, page: i64, size: i64) -> Result<(Vec<User>, i64), ControlError> {
        caller.require_admin()?;
        let (rows, total) = self.control.store.users().page((page - 1) * size, size).await?;
        Ok((rows.into_iter().map(User::from).collect(), total))
    }

    /// Admins change roles; only a super admin grants or takes away super admin.
    pub async fn change_role(&self, caller: &Principal, target: &str, role: Role) -> Result<User, ControlError> {
        caller.require_admin()?;
        let target = self.get(target.trim()).await?;
        if (role == Role::SuperAdmin || target.role == Role::SuperAdmin) && caller.role != Role::SuperAdmin {
            return Err(ControlError::PermissionDenied("only a super admin can grant or revoke super admin".into()));
        }
        if target.role.is_admin() && target.id != caller.user_id && caller.role != Role::SuperAdmin {
            return Err(ControlError::PermissionDenied("only a super admin can change another admin's role".into()));
        }
        self.apply_role(Actor::User(caller), &target, role).await
    }

    /// Operator command (no caller: whoever runs `tensormesh user set-role` owns the box).
    pub async fn set_role(&self, user_id: &str, role: Role) -> Result<User, ControlError> {
        let target = self.get(user_id).await?;
        self.apply_role(Actor::Operator, &target, role).await
    }

    async fn apply_role(&self, actor: Actor<'_>, target: &User, role: Role) -> Result<User, ControlError> {
        let user = self
            .control
            .store
            .users()
            .set_role(&target.id, role.as_str(), self.control.now())
            .await?
            .map(User::from)
            .ok_or_else(|| not_found(&target.id))?;
        if target.role != user.role {
            // Tokens were issued for the old role: the user signs in again.
            self.control.store.sessions().revoke_user(&user.id, self.control.now()).await?;
            // Cached key checks carry the role.
            self.control.publish(Change::Keys).await;
            let mut event = user_event(&user.id, action::ROLE_CHANGED, format!("Role changed to {}", user.role));
            event.metadata = serde_json::json!({"from": target.role.as_str(), "to": user.role.as_str()});
            self.control.record(actor, event).await;
        }
        Ok(user)
    }

    /// Operator command: every user, oldest first.
    pub async fn all(&self) -> Result<Vec<User>, ControlError> {
        Ok(self.control.store.users().page(0, i64::MAX).await?.0.into_iter().map(User::from).collect())
    }

    /// Operator command: overrides a user's rate limits over all their keys (capping each
    /// key too); `None` goes back to the server default, 0 means unlimited. Recorded in the
    /// trail like every other change.
    pub async fn set_limits(
        &self,
        user_id: &str,
        requests_per_minute: Option<u32>,
        tokens_per_minute: Option<u32>,
    ) -> Result<(), ControlError> {
        self.apply_limits(Actor::Operator, user_id, requests_per_minute, tokens_per_minute).await
    }

    /// [`Accounts::set_limits`] by an admin (the console).
    pub async fn set_limits_as(
        &self,
        caller: &Principal,
        user_id: &str,
        requests_per_minute: Option<u32>,
        tokens_per_minute: Option<u32>,
    ) -> Result<(), ControlError> {
        caller.require_admin()?;
        self.apply_limits(Actor::User(caller), user_id, requests_per_minute, tokens_per_minute).await
    }

    async fn apply_limits(
        &self,
        actor: Actor<'_>,
        user_id: &str,
        requests_per_minute: Option<u32>,
        tokens_per_minute: Option<u32>,
    ) -> Result<(), ControlError> {
        let user = self.get(user_id).await?;
        let limits = LimitOverride {
            requests_per_minute: requests_per_minute.map(i64::from),
            tokens_per_minute: tokens_per_minute.map(i64::from),
        };
        self.control.store.rate_limits().set(&user.id, limits).await?;
        let mut event = user_event(&user.id, action::LIMITS_CHANGED, "Rate limits changed".to_owned());
        event.metadata = serde_json::json!({
            "requestsPerMinute": requests_per_minute,
            "tokensPerMinute": tokens_per_minute,
        });
        self.control.record(actor, event).await;
        Ok(())
    }

    /// Operator command; every session of the user ends (whoever knew the old password
    /// is signed out).
    pub async fn reset_password(&self, user_id: &str, password: &str) -> Result<(), ControlError> {
        let hash = self.control.hasher.hash(password).await?;
        let now = self.control.now();
        if !self.control.store.users().set_password_hash(user_id, &hash, now).await? {
            return Err(not_found(user_id));
        }
        self.control.store.sessions().revoke_user(user_id, now).await?;
        let event = user_event(user_id, action::PASSWORD_RESET, "Password reset; every session ended".into());
        self.control.record(Actor::Operator, event).await;
        Ok(())
    }

    /// Operator command: a disabled user's sign-ins, access tokens and API keys are refused
    /// (their sessions end now; every process on a PostgreSQL database forgets its cached
    /// key checks as the change notice arrives, on SQLite within `key_cache_ttl`); enabling
    /// lets them sign in again.
    pub async fn set_disabled(&self, user_id: &str, disabled: bool) -> Result<User, ControlError> {
        self.apply_disabled(Actor::Operator, user_id, disabled).await
    }

    /// [`Accounts::set_disabled`] by an admin (the console): not their own account, and an
    /// admin's only by a super admin.
    pub async fn set_disabled_as(
        &self,
        caller: &Principal,
        user_id: &str,
        disabled: bool,
    ) -> Result<User, ControlError> {
        caller.require_admin()?;
        let target = self.get(user_id.trim()).await?;
        if target.id == caller.user_id {
            return Err(ControlError::invalid("userId", "is your own account"));
        }
        if target.role.is_admin() && caller.role != Role::SuperAdmin {
            return Err(ControlError::PermissionDenied("only a super admin can disable an admin".into()));
        }
        self.apply_disabled(Actor::User(caller), &target.id, disabled).await
    }

    async fn apply_disabled(&self, actor: Actor<'_>, user_id: &str, disabled: bool) -> Result<User, ControlError> {
        let now = self.control.now();
        let at = disabled.then_some(now);
        if !self.control.store.users().set_disabled(user_id, at, now).await? {
            return Err(not_found(user_id));
        }
        if disabled {
            self.control.store.sessions().revoke_user(user_id, now).await?;
        }
        self.control.publish(Change::Keys).await;
        let (action, description) = if disabled {
            (action::USER_DISABLED, "Account disabled; sessions ended, API keys refused")
        } else {
            (action::USER_ENABLED, "Account enabled")
        };
        self.control.record(actor, user_event(user_id, action, description.into())).await;
        self.get(user_id).await
    }
}

fn user_event(id: &str, action: &'static str, description: String) -> Event {
    Event {
        owner: id.to_owned(),
        action,
        resource_type: resource::USER,
        resource_id: id.to_owned(),
        description,
        metadata: serde_json::json!({}),
    }
}

fn not_found(id: &str) -> ControlError {
    ControlError::NotFound(format!("user {id} not found"))
}

fn normalize_email(email: &str) -> Result<String, ControlError> {
    let email = email.trim().to_lowercase();
    let valid = email.len() <= 254
        && email.split_once('@').is_some_and(|(local, domain)| !local.is_empty() && !domain.is_empty())
        && !email.chars().any(char::is_whitespace);
    if valid {
        Ok(email)
    } else {
        Err(ControlError::invalid("email", "is not an email address"))
    }
}

fn bounded(field: &'static str, value: String) -> Result<String, ControlError> {
    if value.chars().count() > MAX_FIELD_CHARS {
        Err(ControlError::invalid(field, format!("is longer than {MAX_FIELD_CHARS} characters")))
    } else {
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authors_are_shown_by_their_best_name() {
        let mut u = User {
            id: "u".into(),
            email: "a@b.c".into(),
            first_name: String::new(),
            last_name: String::new(),
            display_name: String::new(),
            company: String::new(),
            role: Role::User,
            tos_accepted_at: None,
            created_at: UnixMs(0),
            updated_at: UnixMs(0),
            disabled_at: None,
        };
        assert_eq!(u.shown_name(), "a@b.c");
        u.first_name = "Ada".into();
        assert_eq!(u.shown_name(), "Ada");
        u.display_name = "ada".into();
        assert_eq!(u.shown_name(), "ada");
    }
}
