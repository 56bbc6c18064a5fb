//! One request as every endpoint of both APIs sees it (the body already read within its
//! limits), with the one parser of each credential a request can carry: a Bearer token
//! (RFC 6750 §2.1) and Basic client credentials (RFC 6749 §2.3.1).

use std::collections::HashMap;
use std::net::IpAddr;

use base64::Engine;
use warp::http::{HeaderMap, Method, header};

use super::OAuthError;

/// A request to one endpoint.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    pub method: &'a Method,
    /// The query string, without `?`.
    pub query: &'a str,
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
    /// The caller's address (after trusted proxies), for trusted-IP checks.
    pub peer: IpAddr,
}

/// Client credentials from `Authorization: Basic`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Basic {
    pub client_id: String,
    pub secret: String,
}

impl Request<'_> {
    fn header(&self, name: header::HeaderName) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn authorization(&self, scheme: &str) -> Option<&str> {
        self.header(header::AUTHORIZATION)
            .and_then(|v| v.split_once(' '))
            .filter(|(s, _)| s.eq_ignore_ascii_case(scheme))
            .map(|(_, rest)| rest.trim())
    }

    /// The token of `Authorization: Bearer <token>`, if one is given.
    pub fn bearer(&self) -> Option<&str> {
        self.authorization("bearer").filter(|t| !t.is_empty())
    }

    /// The client credentials of `Authorization: Basic`, if that scheme is used. Both halves
    /// are form-urlencoded before base64, so each is decoded after splitting (RFC 6749
    /// §2.3.1); malformed credentials are `invalid_client`.
    pub fn basic(&self) -> Result<Option<Basic>, OAuthError> {
        let Some(encoded) = self.authorization("basic") else { return Ok(None) };
        let malformed = || OAuthError::InvalidClient("malformed Basic credentials".into());
        let raw = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(malformed)?;
        let (id, secret) = raw.split_once(':').ok_or_else(malformed)?;
        Ok(Some(Basic { client_id: form_decode(id), secret: form_decode(secret) }))
    }

    /// Whether the body is a form.
    pub fn is_form(&self) -> bool {
        self.content_type_is("application/x-www-form-urlencoded")
    }

    fn content_type_is(&self, media: &str) -> bool {
        self.header(header::CONTENT_TYPE).is_some_and(|ct| ct.trim_start().to_ascii_lowercase().starts_with(media))
    }

    /// The parameters of an endpoint that takes only POSTed forms (token, introspection,
    /// revocation): anything else is refused before it is read.
    pub fn form(&self) -> Result<HashMap<String, String>, OAuthError> {
        if *self.method != Method::POST {
            return Err(OAuthError::MethodNotAllowed("POST"));
        }
        self.params(false)
    }

    /// Request parameters: the query of a GET; the form body of a POST, or, where
    /// `allow_json` (authorize, as OpenBao's JSON API takes it), a JSON object of strings.
    /// Each is bounded by [`super::max_param_bytes`].
    pub fn params(&self, allow_json: bool) -> Result<HashMap<String, String>, OAuthError> {
        let params = if *self.method != Method::POST {
            super::parse_params(self.query.as_bytes())?
        } else if self.is_form() {
            super::parse_params(self.body)?
        } else if allow_json && self.content_type_is("application/json") {
            json_params(self.body)?
        } else {
            return Err(OAuthError::InvalidRequest("the body must be application/x-www-form-urlencoded".into()));
        };
        super::check_param_sizes(&params)?;
        Ok(params)
    }
}

fn form_decode(part: &str) -> String {
    url::form_urlencoded::parse(format!("x={part}").as_bytes()).next().map(|(_, v)| v.into_owned()).unwrap_or_default()
}

/// A JSON object of strings (numbers are taken as their text) as parameters. As in a form
/// (RFC 6749 §3.1), a parameter given twice is refused, where `serde_json::Value` would silently
/// keep the last one; members with an empty name or value are ignored as a form's are.
pub fn json_params(body: &[u8]) -> Result<HashMap<String, String>, OAuthError> {
    let members: Members = serde_json::from_slice(body).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => OAuthError::InvalidRequest("the body must be a JSON object".into()),
        _ => OAuthError::InvalidRequest("the body is not valid JSON".into()),
    })?;
    let mut out = HashMap::new();
    for (k, v) in members.0 {
        let v = match v {
            serde_json::Value::String(s) => s,
            serde_json::Value::Number(n) => n.to_string(),
            _ => return Err(OAuthError::InvalidRequest(format!("the parameter {k} must be a string"))),
        };
        if k.is_empty() || v.is_empty() {
            continue;
        }
        if out.contains_key(&k) {
            return Err(OAuthError::InvalidRequest(format!("the parameter {k} is repeated")));
        }
        out.insert(k, v);
    }
    Ok(out)
}

/// A JSON object's members in order, repeated names kept.
struct Members(Vec<(String, serde_json::Value)>);

impl<'de> serde::Deserialize<'de> for Members {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Members;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Members, A::Error> {
                let mut out = Vec::new();
                while let Some(member) = map.next_entry::<String, serde_json::Value>()? {
                    out.push(member);
                }
                Ok(Members(out))
            }
        }
        d.deserialize_map(Visit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use warp::http::HeaderValue;

    fn request<'a>(method: &'a Method, headers: &'a HeaderMap, body: &'a [u8]) -> Request<'a> {
        Request { method, query: "", headers, body, peer: IpAddr::from([127, 0, 0, 1]) }
    }

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(k.clone(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn basic_credentials_are_form_decoded_after_splitting() {
        // client_id "a:b" and secret "p%w d" are form-urlencoded before base64 (RFC 6749 §2.3.1).
        let value = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("a%3Ab:p%25w+d"));
        let h = headers(&[(header::AUTHORIZATION, &value)]);
        let got = request(&Method::POST, &h, b"").basic().unwrap();
        assert_eq!(got, Some(Basic { client_id: "a:b".into(), secret: "p%w d".into() }));
        let h = headers(&[(header::AUTHORIZATION, "Basic !!!")]);
        assert!(matches!(request(&Method::POST, &h, b"").basic(), Err(OAuthError::InvalidClient(_))));
        let h = headers(&[(header::AUTHORIZATION, "Bearer abc")]);
        assert_eq!(request(&Method::POST, &h, b"").basic().unwrap(), None);
        assert_eq!(request(&Method::POST, &h, b"").bearer(), Some("abc"));
        let h = headers(&[(header::AUTHORIZATION, "bearer  ")]);
        assert_eq!(request(&Method::POST, &h, b"").bearer(), None, "an empty token is no token");
    }

    #[test]
    fn json_parameters_follow_the_form_rules() {
        let json = headers(&[(header::CONTENT_TYPE, "application/json")]);
        let p = request(&Method::POST, &json, br#"{"scope": "openid", "max_age": 30, "": "x"}"#).params(true).unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!((p["scope"].as_str(), p["max_age"].as_str()), ("openid", "30"));
        let repeated = request(&Method::POST, &json, br#"{"scope": "openid", "scope": "evil"}"#).params(true);
        assert_eq!(repeated, Err(OAuthError::InvalidRequest("the parameter scope is repeated".into())));
        for (body, why) in [(&b"[1]"[..], "must be a JSON object"), (b"{\"a\":", "not valid JSON"), (b"7", "object")] {
            let err = request(&Method::POST, &json, body).params(true).unwrap_err();
            assert!(err.description().contains(why), "{err:?}");
        }
        assert!(request(&Method::POST, &json, br#"{"a": {"b": "c"}}"#).params(true).is_err());
        assert!(request(&Method::POST, &json, br#"{"a": "b"}"#).params(false).is_err(), "JSON only where allowed");
        assert_eq!(request(&Method::GET, &json, b"").form(), Err(OAuthError::MethodNotAllowed("POST")));
    }
}
