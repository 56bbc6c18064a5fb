//! Why the shared store is down, in words an operator can act on: the health check's ping
//! only times out while the connection manager retries in the background, so a wrong
//! password and a store that is not listening would look alike. When the ping fails, one
//! fresh connection is tried and its error is named.

use std::time::Duration;

use redis::{ErrorKind, RedisError};

/// The cause of a failed connection or call, for logs and `/readyz` (never a secret).
pub fn cause(e: &RedisError) -> String {
    let auth = matches!(e.kind(), ErrorKind::AuthenticationFailed)
        || matches!(e.code(), Some("WRONGPASS" | "NOAUTH" | "NOPERM"));
    if auth {
        return "authentication refused: check --session-store-username and the password \
                (--session-store-password-file or OIDC_OPERATOR_SESSION_STORE_PASSWORD)"
            .into();
    }
    if e.is_connection_refusal() {
        return "connection refused: nothing listens at the --session-store address".into();
    }
    if e.is_timeout() {
        return "no answer in time (the address may be unreachable or the store stalled)".into();
    }
    let text = e.to_string();
    let lower = text.to_ascii_lowercase();
    if ["tls", "certificate", "handshake", "invalidcertificate", "unknownissuer"].iter().any(|w| lower.contains(w)) {
        return format!("TLS failed: {} (check --session-store-ca and the URL's scheme)", crate::login::clip(&text));
    }
    if lower.contains("dns") || lower.contains("failed to lookup") || lower.contains("name or service not known") {
        return format!("the store's host name does not resolve: {}", crate::login::clip(&text));
    }
    format!("the store failed: {}", crate::login::clip(&text))
}

/// Connects afresh to a single node and pings it, naming what failed.
pub async fn probe(client: &redis::Client, timeout: Duration) -> Result<(), String> {
    let config =
        redis::AsyncConnectionConfig::new().set_connection_timeout(Some(timeout)).set_response_timeout(Some(timeout));
    let attempt = async {
        let mut conn = client.get_multiplexed_async_connection_with_config(&config).await?;
        redis::cmd("PING").query_async::<String>(&mut conn).await
    };
    match tokio::time::timeout(timeout + Duration::from_millis(100), attempt).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(cause(&e)),
        Err(_) => Err(format!("no answer within {} ms", timeout.as_millis())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causes_are_named() {
        let auth = RedisError::from((ErrorKind::AuthenticationFailed, "WRONGPASS invalid username-password pair"));
        assert!(cause(&auth).starts_with("authentication refused"), "{}", cause(&auth));
        let refused = RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert!(cause(&refused).starts_with("connection refused"), "{}", cause(&refused));
        let timeout = RedisError::from(std::io::Error::from(std::io::ErrorKind::TimedOut));
        assert!(cause(&timeout).starts_with("no answer in time"), "{}", cause(&timeout));
    }
}
