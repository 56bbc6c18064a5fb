//! `/readyz` and the log name why a shared store is down (issue 21, item 3): a password the
//! store refuses is not a store that does not answer, and neither is a refused connection.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

mod common;

use std::time::Duration;

use common::redis::{RedisServer, cli};
use common::{Server, holds_within};

async fn readyz(server: &Server) -> (u16, String) {
    let resp = reqwest::get(format!("{}/readyz", server.metrics)).await.unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

async fn wait_readyz(server: &Server, needle: &str) -> String {
    let mut last = (0, String::new());
    let said = holds_within(Duration::from_secs(15), async || {
        last = readyz(server).await;
        last.0 == 503 && last.1.contains(needle)
    })
    .await;
    assert!(said, "/readyz never said {needle:?}; last: {} {}", last.0, last.1);
    last.1
}

#[tokio::test(flavor = "multi_thread")]
async fn readyz_names_a_refused_password_and_a_refused_connection() {
    let mut redis = tokio::task::spawn_blocking(RedisServer::start).await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let (m, state) = (tmp.path().join("m"), tmp.path().join("state"));
    std::fs::create_dir(&m).unwrap();
    let url = redis.url();
    let server = Server::start(&m, &state, &["--session-store", &url, "--session-store-timeout-ms", "300"]).await;
    assert_eq!(readyz(&server).await.0, 200);

    // The store's password changes under the operator (a rotated Secret not yet mounted):
    // its connections are dropped and every reconnection is refused.
    let port = redis.port;
    tokio::task::spawn_blocking(move || {
        cli(port, &["config", "set", "requirepass", "rotated-password"]);
        cli(port, &["-a", "rotated-password", "--no-auth-warning", "client", "kill", "type", "normal"]);
    })
    .await
    .unwrap();
    let body = wait_readyz(&server, "authentication refused").await;
    assert!(!body.contains("rotated-password"), "a password in /readyz: {body}");
    let log = std::fs::read_to_string(state.with_extension("log")).unwrap();
    assert!(log.contains("authentication refused"), "the log does not name the cause:\n{log}");

    // Nothing listens any more.
    tokio::task::spawn_blocking(move || redis.stop()).await.unwrap();
    wait_readyz(&server, "connection refused").await;
}
