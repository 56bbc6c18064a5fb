//! The format of every OAuth token the token endpoint issues (an access token, a refresh
//! token, the `jti` of a JWT access token): `<43 random base64url chars>.<base64url(grant
//! id)>`. The suffix names the grant the token belongs to, so either store finds the token
//! inside its grant with one lookup (one Redis key, one Cluster slot) and a whole grant can
//! be revoked at once. The suffix reveals only the grant id (a code's hash, or random bytes),
//! never a secret: the token is the 256 random bits before the dot.

use base64::Engine;

use crate::credentials::RandomError;

/// A grant's id: the code's hash for a code grant, 32 random bytes for a client grant.
pub type GrantId = [u8; 32];

/// A new handle of the grant `grant`.
pub fn new_handle(grant: &GrantId) -> Result<String, RandomError> {
    Ok(handle(&super::new_token()?, grant))
}

/// The handle made of `random` (a [`super::new_token`]) and its grant.
pub fn handle(random: &str, grant: &GrantId) -> String {
    format!("{random}.{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(grant))
}

/// The grant a handle names, if it is well formed.
pub fn grant_of(token: &str) -> Option<GrantId> {
    let (_, suffix) = token.rsplit_once('.')?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(suffix).ok()?;
    bytes.try_into().ok()
}

/// A new client grant's id: 32 random bytes.
pub fn new_grant_id() -> Result<GrantId, RandomError> {
    use aws_lc_rs::rand::SecureRandom;
    let mut bytes = [0u8; 32];
    aws_lc_rs::rand::SystemRandom::new().fill(&mut bytes).map_err(|_| RandomError)?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_name_their_grant() {
        let grant = super::super::token_hash("a code");
        let token = new_handle(&grant).unwrap();
        assert_eq!(token.split_once('.').map(|(r, _)| r.len()), Some(43));
        assert_eq!(grant_of(&token), Some(grant));
        assert_eq!(grant_of(&handle("random", &grant)), Some(grant));
        assert_eq!(grant_of("no-suffix"), None);
        assert_eq!(grant_of("x.not base64!"), None);
        assert_eq!(grant_of("x.c2hvcnQ"), None, "a suffix of another length names no grant");
        assert_ne!(new_grant_id().unwrap(), new_grant_id().unwrap());
    }
}
