//! Bearer secrets (API keys, access and refresh tokens, CLI login codes).
//!
//! Shape: `tm_<kind>_<public id>_<secret>`, e.g. `tm_sk_Ab3dE6gH_<32 chars>`, from the OS
//! RNG (32 base62 characters: 190 bits). Only the public part `tm_<kind>_<public id>` and
//! the SHA-256 digest of the whole token are stored; a lookup goes by public id and the
//! digests are compared in constant time (docs/contracts.md §G12).

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const PUBLIC_LEN: usize = 8;
const SECRET_LEN: usize = 32;

/// What a token is for; the prefix makes a leaked one recognisable (and scannable).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    ApiKey,
    Access,
    Refresh,
    CliCode,
}

impl Kind {
    fn prefix(self) -> &'static str {
        match self {
            Kind::ApiKey => "tm_sk_",
            Kind::Access => "tm_at_",
            Kind::Refresh => "tm_rt_",
            Kind::CliCode => "tm_cli_",
        }
    }
}

/// A new secret: `token` is shown once; `public_id` and `digest` are what gets stored.
#[derive(Debug)]
pub struct Issued {
    pub token: String,
    pub public_id: String,
    pub digest: String,
}

/// What a presented token is looked up by and checked against.
#[derive(Debug, PartialEq, Eq)]
pub struct Presented {
    pub public_id: String,
    pub digest: String,
}

pub fn issue(kind: Kind) -> Issued {
    let public_id = format!("{}{}", kind.prefix(), random_base62(PUBLIC_LEN));
    let token = format!("{public_id}_{}", random_base62(SECRET_LEN));
    Issued { digest: digest(&token), token, public_id }
}

/// Splits a presented token of `kind`; `None` when it cannot be one.
pub fn parse(kind: Kind, token: &str) -> Option<Presented> {
    let rest = token.strip_prefix(kind.prefix())?;
    let (public, secret) = rest.split_once('_')?;
    let well_formed = public.len() == PUBLIC_LEN
        && secret.len() == SECRET_LEN
        && public.bytes().chain(secret.bytes()).all(|b| b.is_ascii_alphanumeric());
    well_formed.then(|| Presented { public_id: format!("{}{public}", kind.prefix()), digest: digest(token) })
}

/// An API key of any shape (operators may bring their own, e.g. `TENSORMESH_ADMIN_API_KEY`):
/// ours split as usual, others get a public id derived from their digest.
pub fn parse_api_key(token: &str) -> Presented {
    parse(Kind::ApiKey, token).unwrap_or_else(|| {
        let digest = digest(token);
        Presented { public_id: format!("{}{}", Kind::ApiKey.prefix(), &digest[..PUBLIC_LEN]), digest }
    })
}

pub fn digest(token: &str) -> String {
    format!("{:x}", Sha256::digest(token.as_bytes()))
}

/// Constant-time digest comparison: the only way digests are ever compared.
pub fn digests_match(stored: &str, presented: &str) -> bool {
    stored.as_bytes().ct_eq(presented.as_bytes()).into()
}

pub fn random_base62(len: usize) -> String {
    random_string(ALPHABET, len)
}

/// Consonants only, as RFC 8628 §6.1 suggests: nothing to misread (0/O, 1/I), no words.
const USER_CODE_ALPHABET: &[u8; 20] = b"BCDFGHJKLMNPQRSTVWXZ";

/// A short code for a person to compare between two screens: `XXXX-XXXX` (34 bits).
pub fn user_code() -> String {
    let letters = random_string(USER_CODE_ALPHABET, 8);
    format!("{}-{}", &letters[..4], &letters[4..])
}

fn random_string(alphabet: &[u8], len: usize) -> String {
    let mut out = String::with_capacity(len);
    let mut buf = [0u8; 64];
    // Bytes at or above the largest multiple of the alphabet's size are dropped, so every
    // character is equally likely.
    let limit = 256 - 256 % alphabet.len();
    while out.len() < len {
        // The OS RNG never fails on Linux once booted; an error here is unrecoverable.
        if getrandom::getrandom(&mut buf).is_err() {
            std::process::abort();
        }
        out.extend(
            buf.iter()
                .filter(|&&b| usize::from(b) < limit)
                .map(|&b| alphabet[usize::from(b) % alphabet.len()] as char)
                .take(len - out.len()),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_tokens_parse_back_to_their_public_id_and_digest() {
        let issued = issue(Kind::ApiKey);
        assert!(issued.token.starts_with("tm_sk_"));
        assert_eq!(issued.token.len(), 6 + PUBLIC_LEN + 1 + SECRET_LEN);
        let presented = parse(Kind::ApiKey, &issued.token).unwrap_or_else(|| panic!("unparsable"));
        assert_eq!(presented, Presented { public_id: issued.public_id.clone(), digest: issued.digest.clone() });
        assert!(!issued.digest.contains(&issued.token[issued.public_id.len() + 1..]));
        assert_ne!(issue(Kind::ApiKey).token, issued.token);
    }

    #[test]
    fn malformed_or_foreign_tokens_do_not_parse() {
        let token = issue(Kind::Access).token;
        assert!(parse(Kind::Refresh, &token).is_none());
        assert!(parse(Kind::Access, &token[..token.len() - 1]).is_none());
        assert!(parse(Kind::Access, &format!("{token}x")).is_none());
        assert!(parse(Kind::Access, "tm_at_12345678_!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!").is_none());
        let foreign = parse_api_key("my-own-deployment-key");
        assert!(foreign.public_id.starts_with("tm_sk_") && !foreign.public_id.contains("my-own"));
    }

    #[test]
    fn user_codes_are_two_groups_of_four_consonants() {
        let code = user_code();
        let (a, b) = code.split_once('-').unwrap_or_else(|| panic!("{code}"));
        assert_eq!((a.len(), b.len()), (4, 4), "{code}");
        assert!(a.bytes().chain(b.bytes()).all(|c| USER_CODE_ALPHABET.contains(&c)), "{code}");
        assert_ne!(user_code(), code);
    }

    #[test]
    fn digests_compare_exactly() {
        let d = digest("a");
        assert!(digests_match(&d, &digest("a")));
        assert!(!digests_match(&d, &digest("b")));
        assert!(!digests_match(&d, &d[..10]));
    }
}
