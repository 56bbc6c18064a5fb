//! One protocol client for the tests: discovery, machine login, authorize, token and userinfo
//! of one provider, plus a [`Request`] value that negative-case tables change one field of
//! and [`refusals`], the loop that runs such a table. New endpoints and grants add methods or
//! rows here, not another copy of the HTTP plumbing.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use reqwest::Method;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};

use super::Server;

/// How a request authenticates.
#[derive(Clone, Debug)]
pub enum Auth {
    None,
    /// HTTP Basic (RFC 6749 §2.3.1 `client_secret_basic`).
    Basic(String, String),
    /// A Bearer token (RFC 6750 §2.1).
    Bearer(String),
}

impl Auth {
    pub fn basic(id: &str, secret: &str) -> Auth {
        Auth::Basic(id.to_owned(), secret.to_owned())
    }

    pub fn bearer(token: &str) -> Auth {
        Auth::Bearer(token.to_owned())
    }
}

/// What a request carries its parameters in.
#[derive(Clone, Debug)]
pub enum Body {
    /// The query string (GET).
    Query,
    /// `application/x-www-form-urlencoded` (POST).
    Form,
    /// A JSON object of the parameters (POST, as OpenBao's API takes them).
    Json,
    /// A body given as is, with its content type; the parameters are not sent.
    Raw { content_type: &'static str, body: String },
}

/// One request to an endpoint of a provider: what a table row changes.
#[derive(Clone, Debug)]
pub struct Request {
    pub method: Method,
    /// The endpoint below the issuer (`token`, `authorize`, `.well-known/openid-configuration`).
    pub endpoint: String,
    /// Another provider (in the same namespace) than the client's.
    pub provider: Option<String>,
    /// Parameters in order; a name may repeat.
    pub params: Vec<(String, String)>,
    pub auth: Auth,
    pub body: Body,
}

impl Request {
    /// A GET of `endpoint` with parameters in the query.
    pub fn get(endpoint: &str) -> Request {
        Request {
            method: Method::GET,
            endpoint: endpoint.to_owned(),
            provider: None,
            params: Vec::new(),
            auth: Auth::None,
            body: Body::Query,
        }
    }

    /// A form POST to `endpoint`.
    pub fn post(endpoint: &str) -> Request {
        Request { method: Method::POST, body: Body::Form, ..Request::get(endpoint) }
    }

    /// The authorization_code exchange of `code` for `redirect_uri` (RFC 6749 §4.1.3).
    pub fn exchange(code: &str, redirect_uri: &str) -> Request {
        Request::post("token")
            .set("grant_type", "authorization_code")
            .set("code", code)
            .set("redirect_uri", redirect_uri)
    }

    /// Sets `name` to `value`, replacing every earlier value.
    pub fn set(self, name: &str, value: &str) -> Request {
        self.unset(name).add(name, value)
    }

    /// Adds `name=value` after the others, even when `name` is there already.
    pub fn add(mut self, name: &str, value: &str) -> Request {
        self.params.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Removes `name`.
    pub fn unset(mut self, name: &str) -> Request {
        self.params.retain(|(k, _)| k != name);
        self
    }

    pub fn auth(mut self, auth: Auth) -> Request {
        self.auth = auth;
        self
    }

    pub fn method(mut self, method: Method) -> Request {
        self.method = method;
        self
    }

    pub fn body(mut self, body: Body) -> Request {
        self.body = body;
        self
    }

    /// At provider `name` instead of the client's.
    pub fn at(mut self, provider: &str) -> Request {
        self.provider = Some(provider.to_owned());
        self
    }

    /// The value of `name`, if set.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// A response: status, the JSON body (`null` when it is not JSON) and the headers.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: Value,
    pub headers: HeaderMap,
}

impl Reply {
    /// The RFC 6749 `error` code, if any.
    pub fn error(&self) -> Option<&str> {
        self.body["error"].as_str()
    }

    /// A header as text ("" when absent).
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
    }

    /// A string member of the body, or a failed test naming what was expected.
    pub fn text(&self, member: &str) -> String {
        self.body[member]
            .as_str()
            .unwrap_or_else(|| panic!("no {member} in {} ({})", self.body, self.status))
            .to_owned()
    }
}

/// The protocol endpoints of one provider of a running server.
#[derive(Clone)]
pub struct OAuth {
    pub api: String,
    pub namespace: String,
    pub provider: String,
    http: reqwest::Client,
}

impl OAuth {
    /// A client of provider `namespace/provider` of `server`, trusting the CA in its state
    /// folder when there is one and never following redirects (a relying party must not
    /// follow them at the token endpoint).
    pub fn new(server: &Server, namespace: &str, provider: &str) -> OAuth {
        super::ensure_crypto();
        let mut builder =
            reqwest::Client::builder().timeout(Duration::from_secs(10)).redirect(reqwest::redirect::Policy::none());
        if let Ok(ca) = std::fs::read(server.state.join("tls/ca.crt")) {
            builder = builder.add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap());
        }
        Self::with_http(server, namespace, provider, builder.build().unwrap())
    }

    /// As [`OAuth::new`], through `http`.
    pub fn with_http(server: &Server, namespace: &str, provider: &str, http: reqwest::Client) -> OAuth {
        OAuth { api: server.api.clone(), namespace: namespace.to_owned(), provider: provider.to_owned(), http }
    }

    /// The same server and client, for another provider.
    pub fn provider(&self, provider: &str) -> OAuth {
        OAuth { provider: provider.to_owned(), ..self.clone() }
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// The issuer URL of `provider` (the client's when `None`).
    pub fn issuer_of(&self, provider: Option<&str>) -> String {
        let provider = provider.unwrap_or(&self.provider);
        format!("{}/v1/{}/identity/oidc/provider/{provider}", self.api, self.namespace)
    }

    pub fn issuer(&self) -> String {
        self.issuer_of(None)
    }

    /// The URL of `endpoint` below the issuer.
    pub fn url(&self, endpoint: &str) -> String {
        format!("{}/{endpoint}", self.issuer())
    }

    /// Sends `request` as it says.
    pub async fn send(&self, request: &Request) -> Reply {
        let url = format!("{}/{}", self.issuer_of(request.provider.as_deref()), request.endpoint);
        let mut req = self.http.request(request.method.clone(), url);
        req = match &request.body {
            Body::Query => req.query(&request.params),
            Body::Form => req.form(&request.params),
            Body::Json => {
                let object: serde_json::Map<String, Value> =
                    request.params.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect();
                req.json(&object)
            }
            Body::Raw { content_type, body } => req.header("content-type", *content_type).body(body.clone()),
        };
        req = match &request.auth {
            Auth::None => req,
            Auth::Basic(id, secret) => req.basic_auth(id, Some(secret)),
            Auth::Bearer(token) => req.bearer_auth(token),
        };
        reply(req.send().await.unwrap()).await
    }

    /// A form POST of `form` to `endpoint`, authenticated by `auth`.
    pub async fn post_form(&self, endpoint: &str, form: &[(&str, &str)], auth: Auth) -> Reply {
        let mut request = Request::post(endpoint).auth(auth);
        for (k, v) in form {
            request = request.add(k, v);
        }
        self.send(&request).await
    }

    /// The discovery document (OpenID Connect Discovery §4).
    pub async fn discovery(&self) -> Reply {
        self.send(&Request::get(".well-known/openid-configuration")).await
    }

    /// A machine login with an external JWT (`POST /api/v1/auth/oidc-auth/login`).
    pub async fn login(&self, identity_id: &str, jwt: &str) -> Reply {
        let resp = self
            .http
            .post(format!("{}/api/v1/auth/oidc-auth/login", self.api))
            .json(&json!({"identityId": identity_id, "jwt": jwt}))
            .send()
            .await
            .unwrap();
        reply(resp).await
    }

    /// A login's identity access token, or a failed test with the answer.
    pub async fn login_token(&self, identity_id: &str, jwt: &str) -> String {
        let r = self.login(identity_id, jwt).await;
        assert_eq!(r.status, 200, "login of {identity_id}: {}", r.body);
        r.text("accessToken")
    }

    /// GET `authorize` with `params`, as the identity holding `token` (when given).
    pub async fn authorize(&self, token: Option<&str>, params: &[(&str, &str)]) -> Reply {
        let mut request = Request::get("authorize").auth(token.map_or(Auth::None, Auth::bearer));
        for (k, v) in params {
            request = request.add(k, v);
        }
        self.send(&request).await
    }

    /// An authorization code for `client_id` (scope `openid`, state `s1`, no PKCE), or a
    /// failed test with the answer.
    pub async fn code(&self, token: &str, client_id: &str, redirect_uri: &str) -> String {
        let params = code_request(client_id, redirect_uri);
        let r = self.send(&params.auth(Auth::bearer(token))).await;
        assert_eq!(r.status, 200, "authorize {client_id}: {}", r.body);
        r.text("code")
    }

    /// POST `token` with `form`, authenticated by `auth`.
    pub async fn token(&self, form: &[(&str, &str)], auth: Auth) -> Reply {
        self.post_form("token", form, auth).await
    }

    /// The authorization_code exchange of `code` by a `client_secret_basic` client.
    pub async fn exchange(&self, client: (&str, &str), code: &str, redirect_uri: &str) -> Reply {
        self.send(&Request::exchange(code, redirect_uri).auth(Auth::basic(client.0, client.1))).await
    }

    /// GET `userinfo` with a Bearer token.
    pub async fn userinfo(&self, access_token: &str) -> Reply {
        self.send(&Request::get("userinfo").auth(Auth::bearer(access_token))).await
    }
}

/// The authorize request of a code for `client_id`: response_type `code`, scope `openid`,
/// state `s1`.
pub fn code_request(client_id: &str, redirect_uri: &str) -> Request {
    Request::get("authorize")
        .set("response_type", "code")
        .set("client_id", client_id)
        .set("redirect_uri", redirect_uri)
        .set("scope", "openid")
        .set("state", "s1")
}

async fn reply(resp: reqwest::Response) -> Reply {
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.json().await.unwrap_or(Value::Null);
    Reply { status, body, headers }
}

/// A client's id and secret (none for a public client) from the state folder.
pub fn credentials(state: &Path, namespace: &str, client: &str) -> (String, Option<String>) {
    let path = state.join(format!("clients/{namespace}/{client}.json"));
    let v: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    (v["client_id"].as_str().unwrap().to_owned(), v["client_secret"].as_str().map(str::to_owned))
}

/// A confidential client's id and secret from the state folder.
pub fn confidential(state: &Path, namespace: &str, client: &str) -> (String, String) {
    let (id, secret) = credentials(state, namespace, client);
    (id, secret.unwrap_or_else(|| panic!("{namespace}/{client} has no secret")))
}

/// One negative case: a name, the request, the expected status and RFC error code.
pub type Refusal = (&'static str, Request, u16, &'static str);

/// Sends every row of `table` in order and asserts its exact status and error code, an
/// `error_description`, and that nothing was issued (no code, no token); a failure names the
/// row. Returns the replies by row name, for the checks particular to a row.
pub async fn refusals(oauth: &OAuth, table: Vec<Refusal>) -> BTreeMap<&'static str, Reply> {
    let mut replies = BTreeMap::new();
    for (name, request, status, error) in table {
        let r = oauth.send(&request).await;
        assert_eq!((r.status, r.error()), (status, Some(error)), "row {name:?}: {}", r.body);
        assert!(r.body["error_description"].is_string(), "row {name:?}: no error_description in {}", r.body);
        for issued in ["code", "access_token", "id_token"] {
            assert!(r.body.get(issued).is_none(), "row {name:?}: a refusal carries {issued}: {}", r.body);
        }
        assert!(replies.insert(name, r).is_none(), "two rows named {name:?}");
    }
    replies
}

/// The `oauth2` crate's client of one provider, every endpoint set: what a third-party
/// relying party or service uses. The introspection (RFC 7662) and revocation (RFC 7009)
/// endpoints are at the paths issue 22 gives them, whether or not this build serves them.
pub type Oauth2Client = oauth2::basic::BasicClient<
    oauth2::EndpointSet,
    oauth2::EndpointNotSet,
    oauth2::EndpointSet,
    oauth2::EndpointSet,
    oauth2::EndpointSet,
>;

/// What an `oauth2` token-endpoint call fails with; [`oauth2_error`] reads the RFC code.
pub type Oauth2Error<T> = oauth2::RequestTokenError<oauth2::HttpClientError<reqwest::Error>, T>;

/// The RFC 6749 `error` code of a failed `oauth2` call, when the server answered one.
pub fn oauth2_error<T: oauth2::ErrorResponse + serde::Serialize>(e: &Oauth2Error<T>) -> Option<String> {
    match e {
        Oauth2Error::ServerResponse(body) => serde_json::to_value(body).ok()?["error"].as_str().map(str::to_owned),
        _ => None,
    }
}

impl OAuth {
    /// An `oauth2` client for `client_id` (with `secret` when confidential) authenticating
    /// as `auth` says (`BasicAuth` is `client_secret_basic`, `RequestBody` is
    /// `client_secret_post`), redirecting to `redirect_uri`.
    pub fn oauth2_client(
        &self,
        client_id: &str,
        secret: Option<&str>,
        auth: oauth2::AuthType,
        redirect_uri: &str,
    ) -> Oauth2Client {
        let mut client = oauth2::basic::BasicClient::new(oauth2::ClientId::new(client_id.to_owned()))
            .set_auth_type(auth)
            .set_auth_uri(oauth2::AuthUrl::new(self.url("authorize")).unwrap())
            .set_token_uri(oauth2::TokenUrl::new(self.url("token")).unwrap())
            .set_introspection_url(oauth2::IntrospectionUrl::new(self.url("introspect")).unwrap())
            .set_revocation_url(oauth2::RevocationUrl::new(self.url("revoke")).unwrap())
            .set_redirect_uri(oauth2::RedirectUrl::new(redirect_uri.to_owned()).unwrap());
        if let Some(secret) = secret {
            client = client.set_client_secret(oauth2::ClientSecret::new(secret.to_owned()));
        }
        client
    }

    /// The authorization_code exchange (RFC 6749 §4.1.3), with a PKCE verifier when given.
    pub async fn oauth2_exchange(
        &self,
        client: &Oauth2Client,
        code: &str,
        verifier: Option<&str>,
    ) -> Result<oauth2::basic::BasicTokenResponse, Oauth2Error<oauth2::basic::BasicErrorResponse>> {
        let mut request = client.exchange_code(oauth2::AuthorizationCode::new(code.to_owned()));
        if let Some(v) = verifier {
            request = request.set_pkce_verifier(oauth2::PkceCodeVerifier::new(v.to_owned()));
        }
        request.request_async(&self.http).await
    }

    /// client_credentials (RFC 6749 §4.4) for `scopes`, optionally for `resource` (RFC 8707).
    pub async fn oauth2_client_credentials(
        &self,
        client: &Oauth2Client,
        scopes: &[&str],
        resource: Option<&str>,
    ) -> Result<oauth2::basic::BasicTokenResponse, Oauth2Error<oauth2::basic::BasicErrorResponse>> {
        let mut request = client.exchange_client_credentials();
        for scope in scopes {
            request = request.add_scope(oauth2::Scope::new((*scope).to_owned()));
        }
        if let Some(resource) = resource {
            request = request.add_extra_param("resource", resource.to_owned());
        }
        request.request_async(&self.http).await
    }

    /// A refresh (RFC 6749 §6), narrowing to `scopes` when any are given.
    pub async fn oauth2_refresh(
        &self,
        client: &Oauth2Client,
        refresh_token: &str,
        scopes: &[&str],
    ) -> Result<oauth2::basic::BasicTokenResponse, Oauth2Error<oauth2::basic::BasicErrorResponse>> {
        let token = oauth2::RefreshToken::new(refresh_token.to_owned());
        let mut request = client.exchange_refresh_token(&token);
        for scope in scopes {
            request = request.add_scope(oauth2::Scope::new((*scope).to_owned()));
        }
        request.request_async(&self.http).await
    }

    /// Introspection of an access token (RFC 7662).
    pub async fn oauth2_introspect(
        &self,
        client: &Oauth2Client,
        access_token: &str,
    ) -> Result<oauth2::basic::BasicTokenIntrospectionResponse, Oauth2Error<oauth2::basic::BasicErrorResponse>> {
        let token = oauth2::AccessToken::new(access_token.to_owned());
        client.introspect(&token).request_async(&self.http).await
    }

    /// Revocation of an access or refresh token (RFC 7009).
    pub async fn oauth2_revoke(
        &self,
        client: &Oauth2Client,
        token: oauth2::StandardRevocableToken,
    ) -> Result<(), Oauth2Error<oauth2::basic::BasicRevocationErrorResponse>> {
        client.revoke_token(token).unwrap().request_async(&self.http).await
    }
}
