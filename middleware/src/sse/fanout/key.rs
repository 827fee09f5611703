//! [`PathAndCredentials`]: the [`KeyExtractor`] of streams proxied to an upstream, shared
//! only between requests with equal credentials (or by everyone, for streams declared
//! [`Share::Public`]).
//!
//! A joiner is served from the leader's inner call and is never checked by the inner
//! service, so a fan-out key must hold everything that decides what the inner service would
//! have answered *this* request: the target, and the credentials it presents.

use http::{HeaderName, Request, header};
use sha2::{Digest, Sha256};

use crate::KeyExtractor;

/// Who may share a stream of a [`PathAndCredentials`] key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Share {
    /// Only requests presenting equal credentials: the same values (compared as a SHA-256
    /// digest, never kept or shown raw) of `Authorization`, `Proxy-Authorization`, `Cookie`
    /// and each of `headers` (say an `x-api-key`), absent ones included. The safe default.
    Credentials {
        /// Request headers that also carry credentials, beyond the three always compared.
        headers: Vec<HeaderName>,
    },
    /// Everyone asking for the same target: the stream is the same whoever asks (a public
    /// feed). The leader's credentials make the one upstream request; a joiner's are never
    /// checked, so use this only for streams the upstream serves to anyone.
    Public,
}

impl Default for Share {
    fn default() -> Self {
        Self::Credentials {
            headers: Vec::new(),
        }
    }
}

/// Headers compared under [`Share::Credentials`] whatever the route names.
const ALWAYS_COMPARED: [HeaderName; 3] = [
    header::AUTHORIZATION,
    header::PROXY_AUTHORIZATION,
    header::COOKIE,
];

/// A digest of the credentials a request presents: equal for equal credentials. Its
/// `Debug` does not show it (a digest of a weak secret can still be guessed offline).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Credentials([u8; 32]);

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Credentials(..)")
    }
}

/// `GET` requests for the same path and query (minus `last_event_id`) share a stream, when
/// [`Share`] allows: by default only if their credentials are equal too.
///
/// ```
/// use agentgate_middleware::KeyExtractor;
/// use agentgate_middleware::sse::fanout::{PathAndCredentials, Share};
/// use http::{HeaderName, Request};
///
/// let key = PathAndCredentials::new(Share::Credentials {
///     headers: vec![HeaderName::from_static("x-api-key")],
/// });
/// let get = |cookie: &str| Request::get("/feed").header("cookie", cookie).body(()).unwrap();
/// assert_eq!(key.extract(&get("sid=1")), key.extract(&get("sid=1")));
/// assert_ne!(key.extract(&get("sid=1")), key.extract(&get("sid=2")));
///
/// let public = PathAndCredentials::new(Share::Public);
/// assert_eq!(public.extract(&get("sid=1")), public.extract(&get("sid=2")));
/// ```
#[derive(Debug, Clone, Default)]
pub struct PathAndCredentials {
    share: Share,
}

impl PathAndCredentials {
    /// Streams shared as `share` says.
    pub fn new(share: Share) -> Self {
        Self { share }
    }

    /// Who may share a stream.
    pub fn share(&self) -> &Share {
        &self.share
    }

    fn credentials<B>(&self, req: &Request<B>, extra: &[HeaderName]) -> Credentials {
        let mut digest = Sha256::new();
        // Length-prefixed fields: no two different header sets hash the same input.
        let mut field = |bytes: &[u8]| {
            digest.update((bytes.len() as u64).to_be_bytes());
            digest.update(bytes);
        };
        for name in ALWAYS_COMPARED.iter().chain(extra) {
            field(name.as_str().as_bytes());
            let values = req.headers().get_all(name);
            field(&(values.iter().count() as u64).to_be_bytes());
            for value in values {
                field(value.as_bytes());
            }
        }
        Credentials(digest.finalize().into())
    }
}

impl KeyExtractor for PathAndCredentials {
    /// The target, and the credentials' digest (`None` for [`Share::Public`]).
    type Key = (String, Option<Credentials>);

    fn extract<B>(&self, req: &Request<B>) -> Option<Self::Key> {
        if req.method() != http::Method::GET {
            return None;
        }
        let mut target = req.uri().path().to_owned();
        if let Some(query) = req.uri().query() {
            let kept: Vec<&str> = query
                .split('&')
                .filter(|pair| !pair.starts_with("last_event_id="))
                .collect();
            if !kept.is_empty() {
                target.push('?');
                target.push_str(&kept.join("&"));
            }
        }
        let credentials = match &self.share {
            Share::Credentials { headers } => Some(self.credentials(req, headers)),
            Share::Public => None,
        };
        Some((target, credentials))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(headers: &[(&str, &str)]) -> Request<()> {
        let mut req = Request::get("/s?x=1");
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        req.body(()).unwrap()
    }

    #[test]
    fn credentials_are_compared_by_value_header_by_header() {
        let key = PathAndCredentials::new(Share::Credentials {
            headers: vec![HeaderName::from_static("x-api-key")],
        });
        let k = |headers: &[(&str, &str)]| key.extract(&get(headers));
        assert_eq!(k(&[("cookie", "a=1")]), k(&[("cookie", "a=1")]));
        assert_eq!(k(&[]), k(&[("x-other", "ignored")]));
        let distinct = [
            k(&[]),
            k(&[("cookie", "a=1")]),
            k(&[("cookie", "a=2")]),
            k(&[("authorization", "Bearer a")]),
            k(&[("proxy-authorization", "Basic a")]),
            k(&[("x-api-key", "a")]),
            k(&[("x-api-key", "a"), ("x-api-key", "b")]),
            k(&[("x-api-key", "ab")]),
            // The value of one header never passes for another's.
            k(&[("cookie", "a"), ("x-api-key", "b")]),
            k(&[("cookie", "ab")]),
        ];
        for (i, a) in distinct.iter().enumerate() {
            for b in &distinct[i + 1..] {
                assert_ne!(a, b);
            }
        }
        // Headers the route does not name do not split streams.
        let default = PathAndCredentials::default();
        assert_eq!(
            default.extract(&get(&[("x-api-key", "a")])),
            default.extract(&get(&[("x-api-key", "b")]))
        );
    }

    #[test]
    fn public_streams_ignore_credentials_and_the_debug_output_hides_them() {
        let public = PathAndCredentials::new(Share::Public);
        assert_eq!(
            public.extract(&get(&[("cookie", "a=1")])),
            Some(("/s?x=1".to_owned(), None))
        );
        let private = PathAndCredentials::default().extract(&get(&[("cookie", "secret-cookie")]));
        let shown = format!("{private:?}");
        assert!(!shown.contains("secret"), "{shown}");
    }

    #[test]
    fn the_cursor_in_the_query_and_non_get_requests_are_ignored() {
        let key = |req: Request<()>| PathAndCredentials::default().extract(&req);
        let a = key(Request::get("/s?x=1&last_event_id=5").body(()).unwrap());
        let b = key(Request::get("/s?x=1").body(()).unwrap());
        assert_eq!(a, b);
        assert!(key(Request::post("/s").body(()).unwrap()).is_none());
    }
}
