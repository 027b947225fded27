//! Passwords: argon2id with the crate's defaults (19 MiB, 2 passes: the OWASP minimum),
//! stored as PHC strings.

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;

use crate::ControlError;

pub const MIN_LEN: usize = 8;

pub fn hash(password: &str) -> Result<String, ControlError> {
    if password.chars().count() < MIN_LEN {
        return Err(ControlError::invalid("password", format!("must be at least {MIN_LEN} characters")));
    }
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| ControlError::Internal(format!("password hashing failed: {e}")))
}

pub fn verify(password: &str, stored: &str) -> bool {
    PasswordHash::new(stored).is_ok_and(|h| Argon2::default().verify_password(password.as_bytes(), &h).is_ok())
}

/// Spends the time of one verification, so that an unknown email answers as slowly as a
/// wrong password (no account enumeration by timing).
pub fn verify_nothing(password: &str) {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let dummy = DUMMY.get_or_init(|| hash("not-a-real-password").unwrap_or_default());
    let _ = verify(password, dummy);
}
