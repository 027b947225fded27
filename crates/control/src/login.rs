//! The CLI browser login and the sessions it opens.
//!
//! `tm auth login` starts a request and polls with its secret code; the person opens the
//! sign-in link (the request's public id and a short user code, never the secret), checks
//! that the page shows the code their terminal shows, signs in with email and password,
//! and approves or denies. The user code is the defence against the device-code phishing
//! of RFC 8628 §5.4: someone who starts a login and sends the link to a victim gets it
//! approved only if the victim approves a code no terminal of theirs shows, from an
//! address the page names. Both the page and its answers need the whole link (request id
//! and code), so a stranger cannot deny, or probe, someone else's request.
//!
//! An approved code is exchanged once for an access token and a refresh token.
//! Refreshing rotates both; presenting a rotated-away refresh token again revokes the
//! session (RFC 9700).

use std::net::IpAddr;

use tm_store::cli_logins::{CliLoginRow, LoginState};
use tm_store::sessions::{SessionRow, TokenPair};

use crate::accounts::User;
use crate::activity::{action, resource, Actor, Event};
use crate::secret::{self, Kind};
use crate::throttle::{self, Attempt};
use crate::{millis, Control, ControlError, Principal, Role};

/// A login request just started: `cli_code` goes to the CLI only; the request id and the
/// user code make the sign-in link.
#[derive(Debug)]
pub struct LoginStarted {
    pub cli_code: String,
    pub request_id: String,
    pub user_code: String,
}

impl LoginStarted {
    pub fn link(&self) -> Link<'_> {
        Link { request_id: &self.request_id, user_code: &self.user_code }
    }
}

/// What a sign-in link names: both parts are needed to see or answer the request.
#[derive(Debug, Clone, Copy)]
pub struct Link<'a> {
    pub request_id: &'a str,
    /// As typed or carried by the link: case and spaces do not matter.
    pub user_code: &'a str,
}

/// A login request as its sign-in page shows it.
#[derive(Debug)]
pub struct LoginRequest {
    pub user_code: String,
    /// The address that started it, when known.
    pub started_from: Option<String>,
    /// Still waiting for a decision (neither answered nor expired).
    pub pending: bool,
}

/// Tokens for the CLI (`auth.json`).
#[derive(Debug)]
pub struct Tokens {
    pub access_token: String,
    pub refresh_token: String,
    pub expires_in_secs: i64,
}

/// A web console sign-in: `token` goes into the session cookie (an access token of its
/// own session, so it is checked, limited and revoked like the CLI's).
#[derive(Debug)]
pub struct ConsoleSession {
    pub user: User,
    pub token: String,
    /// Unix ms.
    pub expires_at: i64,
}

/// What polling with a login code finds.
#[derive(Debug)]
pub enum Exchange {
    Pending,
    Granted(Tokens),
    Denied,
    Expired,
    /// Unknown, malformed or already used.
    Invalid,
}

/// The CLI browser login and the sessions (access and refresh tokens) it grants.
#[derive(Clone, Copy)]
pub struct Logins<'c> {
    pub(crate) control: &'c Control,
}

impl Logins<'_> {
    /// `address`: the client's, for the per-address limit on starts.
    pub async fn start(&self, address: Option<IpAddr>) -> Result<LoginStarted, ControlError> {
        let now = self.control.now();
        self.control.throttle.count("sign-in requests", address, throttle::STARTS_PER_MINUTE, now)?;
        let issued = secret::issue(Kind::CliCode);
        let user_code = secret::user_code();
        let row = CliLoginRow {
            public_id: issued.public_id.clone(),
            digest: issued.digest,
            state: LoginState::Pending,
            user_id: None,
            created_at: now,
            expires_at: now + millis(self.control.settings.login_ttl),
            user_code: Some(user_code.clone()),
            started_from: address.map(|a| a.to_string()),
        };
        self.control.store.cli_logins().insert(&row).await?;
        Ok(LoginStarted { cli_code: issued.token, request_id: issued.public_id, user_code })
    }

    /// The request a sign-in link names, for its page: `None` when unknown or when the code
    /// is not its code (the two are told apart by no one). `address`: the client's, for the
    /// per-address limit (guessing links is slow).
    pub async fn find(&self, link: Link<'_>, address: Option<IpAddr>) -> Result<Option<LoginRequest>, ControlError> {
        let now = self.control.now();
        self.control.throttle.count("sign-in pages", address, throttle::STARTS_PER_MINUTE, now)?;
        self.lookup(link).await
    }

    async fn lookup(&self, link: Link<'_>) -> Result<Option<LoginRequest>, ControlError> {
        let Some(row) = self.control.store.cli_logins().get(link.request_id).await? else { return Ok(None) };
        let Some(user_code) = row.user_code else { return Ok(None) };
        let presented: String = link.user_code.chars().filter(|c| !c.is_whitespace()).collect();
        if !secret::digests_match(&user_code, &presented.to_ascii_uppercase()) {
            return Ok(None);
        }
        Ok(Some(LoginRequest {
            user_code,
            started_from: row.started_from,
            pending: row.state == LoginState::Pending && self.control.now() < row.expires_at,
        }))
    }

    async fn pending(&self, link: Link<'_>) -> Result<bool, ControlError> {
        Ok(self.lookup(link).await?.is_some_and(|r| r.pending))
    }

    /// Signs in with email and password and approves the request. Refused, before the
    /// password is checked, while the account or the address is locked for failing too
    /// often (see [`throttle`]), and when the request is not pending: so a right password
    /// and a wrong one answer the same for a request that cannot be approved.
    pub async fn approve(&self, link: Link<'_>, attempt: Attempt<'_>, password: &str) -> Result<User, ControlError> {
        let throttle = &self.control.throttle;
        throttle.check(&attempt, self.control.now())?;
        if !self.pending(link).await? {
            return Err(not_pending());
        }
        let user = self.password(attempt, password).await?;
        if self.control.store.cli_logins().decide(link.request_id, Some(&user.id), self.control.now()).await? {
            let event =
                session_event(&user.id, action::LOGIN, "Signed in to the CLI (browser login)", "cli_browser_login");
            self.control.record(Actor::User(&user.principal()), event).await;
            Ok(user)
        } else {
            Err(not_pending())
        }
    }

    /// Approves a CLI login as a person already signed in to the console: they checked the
    /// code on the page and clicked once; no password again.
    pub async fn approve_as(&self, link: Link<'_>, caller: &Principal) -> Result<(), ControlError> {
        let now = self.control.now();
        if !self.pending(link).await?
            || !self.control.store.cli_logins().decide(link.request_id, Some(&caller.user_id), now).await?
        {
            return Err(not_pending());
        }
        let description = "Signed in to the CLI (approved in the console)";
        let event = session_event(&caller.user_id, action::LOGIN, description, "cli_browser_login");
        self.control.record(Actor::User(caller), event).await;
        Ok(())
    }

    /// Signs in to the web console with email and password, under the same attempt limits
    /// as the CLI's sign-in page (see [`throttle`]).
    pub async fn sign_in(&self, attempt: Attempt<'_>, password: &str) -> Result<ConsoleSession, ControlError> {
        self.control.throttle.check(&attempt, self.control.now())?;
        let user = self.password(attempt, password).await?;
        let now = self.control.now();
        let (mut session, tokens) = self.new_session(user.id.clone(), now);
        let expires_at = now + millis(self.control.settings.console_session_ttl);
        // Not refreshable: the refresh token is never handed out, and ends with the session.
        session.tokens.access_expires_at = expires_at;
        session.tokens.refresh_expires_at = expires_at;
        self.control.store.sessions().insert(&session).await?;
        let event = session_event(&user.id, action::LOGIN, "Signed in to the web console", "console");
        self.control.record(Actor::User(&user.principal()), event).await;
        Ok(ConsoleSession { user, token: tokens.access_token, expires_at })
    }

    /// Ends the console session of `token` server-side: the cookie is worth nothing after,
    /// even if a copy of it survives. An unknown or ended session succeeds too.
    pub async fn sign_out(&self, token: &str) -> Result<(), ControlError> {
        let Some(presented) = secret::parse(Kind::Access, token.trim()) else { return Ok(()) };
        let sessions = self.control.store.sessions();
        let Some(session) = sessions.by_access_id(&presented.public_id).await? else { return Ok(()) };
        if !secret::digests_match(&session.tokens.access_digest, &presented.digest) || session.revoked_at.is_some() {
            return Ok(());
        }
        sessions.revoke(&session.id, self.control.now()).await?;
        let event = session_event(&session.user_id, action::LOGOUT, "Signed out of the web console", "console");
        let me = Principal { user_id: session.user_id.clone(), role: Role::User };
        self.control.record(Actor::User(&me), event).await;
        Ok(())
    }

    /// Needs the whole link, like the page: a stranger cannot cancel someone's sign-in.
    /// `address`: the client's, for the per-address limit (guessing links is slow).
    pub async fn deny(&self, link: Link<'_>, address: Option<IpAddr>) -> Result<(), ControlError> {
        let now = self.control.now();
        self.control.throttle.count("sign-in answers", address, throttle::STARTS_PER_MINUTE, now)?;
        if self.pending(link).await? && self.control.store.cli_logins().decide(link.request_id, None, now).await? {
            Ok(())
        } else {
            Err(not_pending())
        }
    }

    /// `address`: the client's, for the per-address limit on polls.
    pub async fn exchange(&self, cli_code: &str, address: Option<IpAddr>) -> Result<Exchange, ControlError> {
        self.control.throttle.count("sign-in polls", address, throttle::POLLS_PER_MINUTE, self.control.now())?;
        let Some(presented) = secret::parse(Kind::CliCode, cli_code.trim()) else {
            return Ok(Exchange::Invalid);
        };
        let Some(row) = self.control.store.cli_logins().get(&presented.public_id).await? else {
            return Ok(Exchange::Invalid);
        };
        if !secret::digests_match(&row.digest, &presented.digest) {
            return Ok(Exchange::Invalid);
        }
        let now = self.control.now();
        Ok(match row.state {
            LoginState::Consumed => Exchange::Invalid,
            LoginState::Denied => Exchange::Denied,
            _ if now >= row.expires_at => Exchange::Expired,
            LoginState::Pending => Exchange::Pending,
            LoginState::Approved => {
                let Some(user_id) = row.user_id else { return Ok(Exchange::Invalid) };
                let (session, tokens) = self.new_session(user_id, now);
                if self.control.store.cli_logins().consume(&row.public_id, &session).await? {
                    Exchange::Granted(tokens)
                } else {
                    Exchange::Invalid
                }
            }
        })
    }

    pub async fn refresh(&self, refresh_token: &str) -> Result<Tokens, ControlError> {
        let presented = secret::parse(Kind::Refresh, refresh_token.trim()).ok_or(ControlError::Unauthenticated)?;
        let sessions = self.control.store.sessions();
        let now = self.control.now();
        let Some(session) = sessions.by_refresh_id(&presented.public_id).await? else {
            if let Some((digest, session_id)) = sessions.retired(&presented.public_id).await? {
                if secret::digests_match(&digest, &presented.digest) {
                    tracing::warn!(session = %session_id, "rotated-away refresh token reused; session revoked");
                    sessions.revoke(&session_id, now).await?;
                }
            }
            return Err(ControlError::Unauthenticated);
        };
        let valid = secret::digests_match(&session.tokens.refresh_digest, &presented.digest)
            && session.revoked_at.is_none()
            && now < session.tokens.refresh_expires_at;
        if !valid {
            return Err(ControlError::Unauthenticated);
        }
        let (mut fresh, tokens) = self.new_session(session.user_id.clone(), now);
        // Refreshing extends a session up to its absolute lifetime from the sign-in, no more.
        let end = session.created_at.saturating_add(millis(self.control.settings.session_max_age));
        fresh.tokens.refresh_expires_at = fresh.tokens.refresh_expires_at.min(end);
        fresh.tokens.access_expires_at = fresh.tokens.access_expires_at.min(end);
        if now >= end {
            return Err(ControlError::Unauthenticated);
        }
        if sessions.rotate(&session, &fresh.tokens).await? {
            Ok(tokens)
        } else {
            Err(ControlError::Unauthenticated)
        }
    }

    /// Ends the session of a refresh token (`tm auth logout`). An unknown or spent token
    /// succeeds too: there is nothing left to end, and nothing to learn.
    pub async fn logout(&self, refresh_token: &str) -> Result<(), ControlError> {
        let Some(presented) = secret::parse(Kind::Refresh, refresh_token.trim()) else { return Ok(()) };
        let sessions = self.control.store.sessions();
        let Some(session) = sessions.by_refresh_id(&presented.public_id).await? else { return Ok(()) };
        if !secret::digests_match(&session.tokens.refresh_digest, &presented.digest) || session.revoked_at.is_some() {
            return Ok(());
        }
        sessions.revoke(&session.id, self.control.now()).await?;
        if let Some(user) = self.control.store.users().by_id(&session.user_id).await? {
            let me = User::from(user).principal();
            let event = session_event(&me.user_id, action::LOGOUT, "Signed out of the CLI", "cli_browser_login");
            self.control.record(Actor::User(&me), event).await;
        }
        Ok(())
    }

    /// The caller behind a control-plane access token, counted against the per-user request
    /// limit (`Settings::requests_per_minute`): every signed-in request comes through here.
    pub async fn authenticate(&self, token: &str) -> Result<Principal, ControlError> {
        let presented = secret::parse(Kind::Access, token).ok_or(ControlError::Unauthenticated)?;
        let session = self
            .control
            .store
            .sessions()
            .by_access_id(&presented.public_id)
            .await?
            .ok_or(ControlError::Unauthenticated)?;
        let valid = secret::digests_match(&session.tokens.access_digest, &presented.digest)
            && session.revoked_at.is_none()
            && self.control.now() < session.tokens.access_expires_at;
        if !valid {
            return Err(ControlError::Unauthenticated);
        }
        let user = self.control.store.users().by_id(&session.user_id).await?.ok_or(ControlError::Unauthenticated)?;
        if user.disabled_at.is_some() {
            return Err(ControlError::Unauthenticated);
        }
        let per_minute = self.control.settings.requests_per_minute;
        self.control.throttle.count_for("Control Plane requests", &user.id, per_minute, self.control.now())?;
        Ok(Principal { role: Role::parse(&user.role).unwrap_or(Role::User), user_id: user.id })
    }

    /// Checks a password under the attempt limits (the caller checked the lock first): a
    /// failure counts against the account and the address, a success clears the account's.
    async fn password(&self, attempt: Attempt<'_>, password: &str) -> Result<User, ControlError> {
        let throttle = &self.control.throttle;
        match self.control.accounts().check_password(attempt.email, password).await {
            Ok(user) => {
                throttle.succeeded(&attempt);
                Ok(user)
            }
            Err(e) => {
                if matches!(e, ControlError::Unauthenticated) {
                    throttle.failed(&attempt, self.control.now());
                }
                Err(e)
            }
        }
    }

    /// A session row (not yet stored) and the tokens it stands for.
    fn new_session(&self, user_id: String, now: i64) -> (SessionRow, Tokens) {
        let access = secret::issue(Kind::Access);
        let refresh = secret::issue(Kind::Refresh);
        let session = SessionRow {
            id: uuid::Uuid::new_v4().to_string(),
            user_id,
            tokens: TokenPair {
                access_id: access.public_id,
                access_digest: access.digest,
                access_expires_at: now + millis(self.control.settings.access_token_ttl),
                refresh_id: refresh.public_id,
                refresh_digest: refresh.digest,
                refresh_expires_at: now + millis(self.control.settings.refresh_token_ttl),
            },
            created_at: now,
            revoked_at: None,
        };
        let tokens = Tokens {
            access_token: access.token,
            refresh_token: refresh.token,
            expires_in_secs: i64::try_from(self.control.settings.access_token_ttl.as_secs()).unwrap_or(i64::MAX),
        };
        (session, tokens)
    }
}

fn not_pending() -> ControlError {
    ControlError::invalid("request", "this sign-in request has expired or was already answered")
}

/// A sign-in or sign-out, for the user's trail; `method`: which door (`cli_browser_login`,
/// `console`).
fn session_event(user_id: &str, action: &'static str, description: &str, method: &str) -> Event {
    Event {
        owner: user_id.to_owned(),
        action,
        resource_type: resource::USER,
        resource_id: user_id.to_owned(),
        description: description.into(),
        metadata: serde_json::json!({"method": method}),
    }
}
