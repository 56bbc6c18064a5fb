//! Kubernetes' TokenReview as the login's [`TokenReviewer`]: for identities with
//! `spec.tokenReview`, the API server says whether a service-account token is still
//! authenticated (its ServiceAccount and Pod still exist), which no signature can tell.

use futures::future::BoxFuture;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use kube::api::{Api, PostParams};

use crate::login::registry::TokenReviewer;

/// Asks the API server the operator runs against.
pub struct KubeTokenReview {
    pub client: kube::Client,
}

impl TokenReviewer for KubeTokenReview {
    fn review<'a>(&'a self, token: &'a str, audiences: Vec<String>) -> BoxFuture<'a, Result<bool, String>> {
        Box::pin(async move {
            let api: Api<TokenReview> = Api::all(self.client.clone());
            let review = TokenReview {
                spec: TokenReviewSpec {
                    token: token.to_owned(),
                    audiences: (!audiences.is_empty()).then_some(audiences),
                },
                ..TokenReview::default()
            };
            let answer = api.create(&PostParams::default(), &review).await.map_err(|e| e.to_string())?;
            Ok(answer.status.and_then(|s| s.authenticated).unwrap_or(false))
        })
    }
}
