//! The admin listener's bearer tokens (`server.admin_tokens`).
//!
//! With no token configured (allowed only on a loopback `admin_listen`) every request that
//! passes the Host check is answered. With tokens, every endpoint but `/healthz` (liveness
//! probes; it says nothing but "ok") needs one of:
//!
//! - `Authorization: Bearer <token>`: `curl`, Prometheus (`authorization.credentials`),
//!   probes;
//! - the cookie [`COOKIE`], for the status page: a browser's `EventSource` cannot send a
//!   header, so opening `/?token=<token>` once answers `303 See Other` to the same page
//!   without the token in its address, setting the cookie (`HttpOnly`, `SameSite=Strict`,
//!   for the browser session). The cookie holds a digest of the token, not the token, so
//!   it is no use as a bearer token elsewhere. Cookies are per host, not per port: another
//!   service on the same host name receives it too.
//!
//! Tokens and cookies are compared as SHA-256 digests in constant time ([`ApiKeys`]).

use bytes::Bytes;
use http::request::Parts;
use http::{HeaderValue, Response, StatusCode, header};
use sha2::{Digest, Sha256};

use crate::api::{ApiError, Body, bearer, body, query_param};
use crate::auth::{ApiKeys, AuthError};

/// The status page's session cookie.
pub const COOKIE: &str = "agentgate_admin";

/// The path that answers without a token.
const OPEN_PATH: &str = "/healthz";

/// Accepted admin credentials; none configured means the listener is open.
#[derive(Debug, Clone)]
pub struct AdminTokens {
    /// The tokens as bearer credentials, and the cookie values derived from them; `None`
    /// when no token is configured.
    keys: Option<(ApiKeys, ApiKeys)>,
}

impl AdminTokens {
    /// The configured `tokens` (`server.admin_tokens`); empty means no token is needed.
    pub fn new(tokens: &[String]) -> Self {
        let keys = (!tokens.is_empty()).then(|| {
            let cookies: Vec<String> = tokens.iter().map(|t| cookie_value(t)).collect();
            (
                ApiKeys::new(tokens.iter().map(String::as_str)),
                ApiKeys::new(cookies.iter().map(String::as_str)),
            )
        });
        Self { keys }
    }

    /// For `GET /?token=<token>`: the redirect setting the cookie, or the refusal of a wrong
    /// token. `None` for any other request (and when no token is configured).
    pub fn login(&self, parts: &Parts) -> Option<Response<Body>> {
        let (tokens, _) = self.keys.as_ref()?;
        if parts.uri.path() != "/" {
            return None;
        }
        let token = query_param(parts.uri.query(), "token")?;
        if let Err(e) = tokens.verify(Some(&token)) {
            return Some(refusal(e).into_response());
        }
        // The same page, its other parameters kept, without the token in the address bar.
        let rest: String = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(
                form_urlencoded::parse(parts.uri.query().unwrap_or_default().as_bytes())
                    .filter(|(k, _)| k != "token"),
            )
            .finish();
        let location = if rest.is_empty() {
            "/".to_owned()
        } else {
            format!("/?{rest}")
        };
        let cookie = format!(
            "{COOKIE}={}; Path=/; HttpOnly; SameSite=Strict",
            cookie_value(&token)
        );
        let mut response = Response::new(body::full(Bytes::new()));
        *response.status_mut() = StatusCode::SEE_OTHER;
        let headers = response.headers_mut();
        // Both values are ASCII built here (the query re-encoded, the cookie hex).
        if let (Ok(location), Ok(cookie)) = (
            HeaderValue::from_str(&location),
            HeaderValue::from_str(&cookie),
        ) {
            headers.insert(header::LOCATION, location);
            headers.insert(header::SET_COOKIE, cookie);
        }
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        Some(response)
    }

    /// Refuses a request without an accepted token (bearer or cookie), unless no token is
    /// configured or the path is `/healthz`.
    pub fn check(&self, parts: &Parts) -> Result<(), ApiError> {
        let Some((tokens, cookies)) = &self.keys else {
            return Ok(());
        };
        if parts.uri.path() == OPEN_PATH {
            return Ok(());
        }
        if let Some(presented) = bearer(&parts.headers) {
            return tokens.verify(Some(presented)).map(drop).map_err(refusal);
        }
        let mut presented = cookie_values(parts).peekable();
        if presented.peek().is_none() {
            return Err(refusal(AuthError::Missing));
        }
        // Every cookie of that name is tried (another listener on the same host may have
        // set one too); the comparison is constant-time per value.
        let accepted = presented.fold(false, |ok, value| ok | cookies.verify(Some(value)).is_ok());
        if accepted {
            Ok(())
        } else {
            Err(refusal(AuthError::Invalid))
        }
    }
}

/// The cookie value standing for `token`: hex SHA-256 of the token under a label of its
/// own, so neither reveals the other.
fn cookie_value(token: &str) -> String {
    Sha256::new()
        .chain_update(b"agentgate admin cookie v1\0")
        .chain_update(token.as_bytes())
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The values of every [`COOKIE`] the request carries.
fn cookie_values(parts: &Parts) -> impl Iterator<Item = &str> {
    parts
        .headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .filter(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value)
}

/// 401 naming what the admin listener wants.
fn refusal(e: AuthError) -> ApiError {
    let (code, message) = match e {
        AuthError::Missing => (
            "admin_token_required",
            "an admin token is required (server.admin_tokens): send Authorization: Bearer \
             <token>, or open /?token=<token> once in the browser",
        ),
        AuthError::Invalid
        | AuthError::Malformed
        | AuthError::ExpiryTooFar
        | AuthError::Expired => (
            "invalid_admin_token",
            "the admin token is not one of server.admin_tokens",
        ),
    };
    ApiError::new(StatusCode::UNAUTHORIZED, code, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "admin-token-0123456789";

    fn parts(uri: &str, headers: &[(&str, &str)]) -> Parts {
        let mut req = http::Request::get(uri);
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        req.body(()).unwrap().into_parts().0
    }

    #[test]
    fn no_token_configured_means_open() {
        let open = AdminTokens::new(&[]);
        assert!(open.check(&parts("/admin/config", &[])).is_ok());
        assert!(open.login(&parts("/?token=x", &[])).is_none());
    }

    #[test]
    fn bearer_or_cookie_and_healthz_is_open() {
        let tokens = AdminTokens::new(&[TOKEN.to_owned()]);
        assert!(tokens.check(&parts("/healthz", &[])).is_ok());
        let missing = tokens.check(&parts("/admin/config", &[])).unwrap_err();
        assert_eq!(
            (missing.status, missing.code),
            (StatusCode::UNAUTHORIZED, "admin_token_required")
        );
        let bearer = format!("Bearer {TOKEN}");
        assert!(
            tokens
                .check(&parts("/metrics", &[("authorization", &bearer)]))
                .is_ok()
        );
        let wrong = tokens
            .check(&parts("/metrics", &[("authorization", "Bearer nope")]))
            .unwrap_err();
        assert_eq!(wrong.code, "invalid_admin_token");

        // Login: redirect without the token, other parameters kept, cookie set.
        let login = tokens
            .login(&parts(&format!("/?session=s1&token={TOKEN}"), &[]))
            .expect("a login");
        assert_eq!(login.status(), StatusCode::SEE_OTHER);
        assert_eq!(login.headers()[header::LOCATION], "/?session=s1");
        let set = login.headers()[header::SET_COOKIE].to_str().unwrap();
        assert!(
            set.contains("HttpOnly") && set.contains("SameSite=Strict"),
            "{set}"
        );
        assert!(!set.contains(TOKEN), "the cookie is not the token: {set}");
        let cookie = set.split(';').next().unwrap();
        let with_cookie = format!("other=1; {cookie}");
        assert!(
            tokens
                .check(&parts("/admin/live", &[("cookie", &with_cookie)]))
                .is_ok()
        );
        // The cookie value is not a bearer token, and a forged cookie is refused.
        let value = cookie.split_once('=').unwrap().1;
        let as_bearer = format!("Bearer {value}");
        assert!(
            tokens
                .check(&parts("/metrics", &[("authorization", &as_bearer)]))
                .is_err()
        );
        let forged = format!("{COOKIE}={TOKEN}");
        assert!(
            tokens
                .check(&parts("/metrics", &[("cookie", &forged)]))
                .is_err()
        );
        let refused = tokens
            .login(&parts("/?token=wrong", &[]))
            .expect("answered");
        assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
        assert!(tokens.login(&parts("/metrics?token=x", &[])).is_none());
    }
}
