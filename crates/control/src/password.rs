//! Passwords: argon2id with the crate's defaults (19 MiB, 2 passes: the OWASP minimum),
//! stored as PHC strings.
//!
//! One hash or check takes tens of milliseconds of CPU, so it never runs on the async
//! runtime (which the inference listener shares: a handful of parallel sign-ins would stall
//! every stream) but on tokio's blocking pool, at most [`Hasher`]'s permits at a time, so a
//! burst of sign-ins queues instead of taking every core.

use std::sync::{Arc, OnceLock};

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use tokio::sync::Semaphore;

use crate::ControlError;

pub const MIN_LEN: usize = 8;

/// Runs argon2 off the runtime, a bounded number at a time. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Hasher {
    permits: Arc<Semaphore>,
}

impl Default for Hasher {
    /// Half the cores (at least one): sign-ins never take the whole machine from inference.
    fn default() -> Hasher {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        Hasher::new((cores / 2).max(1))
    }
}

impl Hasher {
    pub fn new(parallel: usize) -> Hasher {
        Hasher { permits: Arc::new(Semaphore::new(parallel.max(1))) }
    }

    pub async fn hash(&self, password: &str) -> Result<String, ControlError> {
        if password.chars().count() < MIN_LEN {
            return Err(ControlError::invalid("password", format!("must be at least {MIN_LEN} characters")));
        }
        let password = password.to_owned();
        self.off_runtime(move || hash_now(&password)).await?
    }

    pub async fn verify(&self, password: &str, stored: &str) -> Result<bool, ControlError> {
        let (password, stored) = (password.to_owned(), stored.to_owned());
        self.off_runtime(move || verify_now(&password, &stored)).await
    }

    /// Spends the time of one verification, so that an unknown email answers as slowly as a
    /// wrong password (no account enumeration by timing).
    pub async fn verify_nothing(&self, password: &str) -> Result<(), ControlError> {
        static DUMMY: OnceLock<String> = OnceLock::new();
        let password = password.to_owned();
        self.off_runtime(move || {
            let dummy = DUMMY.get_or_init(|| hash_now("not-a-real-password").unwrap_or_default());
            let _ = verify_now(&password, dummy);
        })
        .await
    }

    async fn off_runtime<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, ControlError> {
        // The permit moves into the work: a caller that goes away does not free it while
        // argon2 still runs.
        let permit = Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .map_err(|_| ControlError::Internal("the password hasher is closed".into()))?;
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            work()
        })
        .await
        .map_err(|e| ControlError::Internal(format!("password hashing stopped: {e}")))
    }
}

fn hash_now(password: &str) -> Result<String, ControlError> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| ControlError::Internal(format!("password hashing failed: {e}")))
}

fn verify_now(password: &str, stored: &str) -> bool {
    PasswordHash::new(stored).is_ok_and(|h| Argon2::default().verify_password(password.as_bytes(), &h).is_ok())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;

    /// On a single-threaded runtime another task can run only while the current one
    /// awaits: if argon2 ran inline, the ticker would not move during a check.
    #[tokio::test(flavor = "current_thread")]
    async fn hashing_leaves_the_runtime_free() {
        let hasher = Hasher::new(1);
        let stored = hasher.hash("correct horse").await.unwrap();
        let ticks = Arc::new(AtomicU64::new(0));
        let mut ticker = tokio::task::JoinSet::new();
        let counted = Arc::clone(&ticks);
        ticker.spawn(async move {
            loop {
                counted.fetch_add(1, Ordering::Relaxed);
                tokio::task::yield_now().await;
            }
        });
        tokio::task::yield_now().await;
        let before = ticks.load(Ordering::Relaxed);
        assert!(hasher.verify("correct horse", &stored).await.unwrap());
        assert!(!hasher.verify("wrong horse", &stored).await.unwrap());
        hasher.verify_nothing("anything").await.unwrap();
        assert!(ticks.load(Ordering::Relaxed) - before > 3, "the runtime was blocked while hashing");
        ticker.abort_all();
    }

    #[tokio::test]
    async fn short_passwords_are_refused_before_hashing() {
        let err = Hasher::new(1).hash("short").await.unwrap_err().to_string();
        assert!(err.contains("password") && err.contains("at least 8"), "{err}");
    }
}
