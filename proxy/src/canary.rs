//! Canary routing: an upstream route sends a share of its traffic to a second group.
//!
//! Which group serves a request, first rule that applies:
//! 1. a pin: the pin header, else the pin cookie, says `canary` or `stable`
//!    (case-insensitive; any other value is ignored) — for testers and for rollback drills;
//! 2. the session: a request carrying an [`Affinity`] (the application puts one in the
//!    request's extensions; agentgate: the session id) goes where its hash falls — every request of a session lands on the same
//!    group, on every gateway node and across restarts, and raising the weight only moves
//!    sessions from stable to canary, never back;
//! 3. otherwise a weighted draw, and when a pin cookie is configured the response sets it,
//!    so the client sticks to the group it drew (a browser session stays on one version).

use std::sync::Arc;

use http::header::{COOKIE, HeaderName};
use http::{HeaderMap, HeaderValue};

use crate::upstream::{Affinity, UpstreamGroup};

/// Pin value naming the canary group.
const CANARY: &str = "canary";
/// Pin value naming the stable group.
const STABLE: &str = "stable";
/// Lifetime of a pin cookie the gateway sets after a weighted draw (one day).
const COOKIE_MAX_AGE_SECS: u32 = 86_400;

/// A route's canary: a second group, its share, and how clients pin a group.
#[derive(Debug)]
pub struct Canary {
    group: Arc<UpstreamGroup>,
    /// Share of sessions (and of unpinned, session-less requests) sent to the canary, in
    /// hundredths of a percent: 0..=10_000.
    basis_points: u32,
    header: Option<HeaderName>,
    cookie: Option<String>,
}

/// Which group a request goes to, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pick {
    /// The route's own group.
    Stable(Reason),
    /// The canary group.
    Canary(Reason),
}

/// Why a [`Pick`] was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The pin header said so.
    Header,
    /// The pin cookie said so.
    Cookie,
    /// The session's hash fell on this side of the weight.
    Session,
    /// A weighted draw (the request names no session and carries no pin).
    Draw,
}

impl Pick {
    /// Whether the canary group was picked.
    pub fn is_canary(self) -> bool {
        matches!(self, Self::Canary(_))
    }

    /// Why.
    pub fn reason(self) -> Reason {
        match self {
            Self::Stable(reason) | Self::Canary(reason) => reason,
        }
    }
}

impl Canary {
    /// A canary sending `percent` (0 to 100; more is taken as 100) of the traffic to `group`;
    /// `header` and `cookie` name the pins (`None`: no such pin).
    pub fn new(
        group: Arc<UpstreamGroup>,
        percent: f64,
        header: Option<HeaderName>,
        cookie: Option<String>,
    ) -> Self {
        // Saturating float-to-int conversion: NaN and negatives become 0.
        let basis_points = (percent.clamp(0.0, 100.0) * 100.0).round() as u32;
        Self {
            group,
            basis_points,
            header,
            cookie,
        }
    }

    /// The canary group.
    pub fn group(&self) -> &Arc<UpstreamGroup> {
        &self.group
    }

    /// Picks the group for `req` (see the module docs for the rules).
    pub fn pick(&self, req: &http::request::Parts) -> Pick {
        if let Some(pin) = self.header_pin(&req.headers) {
            return pin(Reason::Header);
        }
        if let Some(pin) = self.cookie_pin(&req.headers) {
            return pin(Reason::Cookie);
        }
        if let Some(Affinity(key)) = req.extensions.get::<Affinity>() {
            return self.by_bucket(fnv1a(key) % 10_000, Reason::Session);
        }
        self.by_bucket(draw(), Reason::Draw)
    }

    /// The `Set-Cookie` value that pins a client to what `pick` drew, when the pick was a
    /// draw and a pin cookie is configured.
    pub fn set_cookie(&self, pick: Pick) -> Option<HeaderValue> {
        if pick.reason() != Reason::Draw {
            return None;
        }
        let name = self.cookie.as_deref()?;
        let value = if pick.is_canary() { CANARY } else { STABLE };
        let cookie = format!(
            "{name}={value}; Path=/; Max-Age={COOKIE_MAX_AGE_SECS}; HttpOnly; SameSite=Lax"
        );
        HeaderValue::from_str(&cookie).ok()
    }

    fn by_bucket(&self, bucket: u32, reason: Reason) -> Pick {
        if bucket < self.basis_points {
            Pick::Canary(reason)
        } else {
            Pick::Stable(reason)
        }
    }

    fn header_pin(&self, headers: &HeaderMap) -> Option<fn(Reason) -> Pick> {
        let value = headers.get(self.header.as_ref()?)?.to_str().ok()?;
        pin(value.trim())
    }

    fn cookie_pin(&self, headers: &HeaderMap) -> Option<fn(Reason) -> Pick> {
        let name = self.cookie.as_deref()?;
        headers
            .get_all(COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(k, _)| *k == name)
            .and_then(|(_, v)| pin(v.trim()))
    }
}

/// The group a pin value names.
fn pin(value: &str) -> Option<fn(Reason) -> Pick> {
    if value.eq_ignore_ascii_case(CANARY) {
        Some(Pick::Canary)
    } else if value.eq_ignore_ascii_case(STABLE) {
        Some(Pick::Stable)
    } else {
        None
    }
}

/// A uniform bucket in 0..10_000 for a weighted draw. `RandomState` carries fresh random
/// keys per instance: randomness without a generator to seed or share between threads.
fn draw() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    (std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
        % 10_000) as u32
}

/// 32-bit FNV-1a: a fixed, documented hash, so every gateway node (of any version) puts a
/// session on the same side.
fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5, |hash, &b| {
        (hash ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::{Balance, UpstreamSettings};
    use std::time::Duration;

    fn group(name: &str) -> Arc<UpstreamGroup> {
        let settings = UpstreamSettings {
            name: name.to_owned(),
            peers: vec!["127.0.0.1:1".parse().unwrap()],
            balance: Balance::RoundRobin,
            connect_timeout: Duration::from_secs(1),
            read_timeout: None,
            idle_timeout: Duration::from_secs(1),
            retry_connect: false,
            health_check: None,
            tls: None,
        };
        Arc::new(UpstreamGroup::new(settings).unwrap())
    }

    fn canary(percent: f64) -> Canary {
        Canary::new(
            group("canary"),
            percent,
            Some(HeaderName::from_static("x-canary")),
            Some("canary".to_owned()),
        )
    }

    /// A request; a session named by `/v2/sessions/{id}/…` or `x-session-id` becomes its
    /// [`Affinity`], as the application's session layer does.
    fn req(path: &str, headers: &[(&'static str, &str)]) -> http::request::Parts {
        let mut r = http::Request::get(path);
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        let (mut parts, ()) = r.body(()).unwrap().into_parts();
        let session = path
            .strip_prefix("/v2/sessions/")
            .and_then(|rest| rest.split('/').next())
            .or_else(|| {
                parts
                    .headers
                    .get("x-session-id")
                    .and_then(|v| v.to_str().ok())
            });
        if let Some(id) = session {
            let affinity = Affinity(bytes::Bytes::copy_from_slice(id.as_bytes()));
            parts.extensions.insert(affinity);
        }
        parts
    }

    #[test]
    fn pins_win_over_weight_header_first() {
        let none = canary(0.0);
        let all = canary(100.0);
        let path = "/v2/sessions/s1/events";
        assert_eq!(
            none.pick(&req(path, &[("x-canary", "Canary")])),
            Pick::Canary(Reason::Header)
        );
        assert_eq!(
            all.pick(&req(path, &[("x-canary", "stable")])),
            Pick::Stable(Reason::Header)
        );
        assert_eq!(
            none.pick(&req(path, &[("cookie", "a=b; canary=canary")])),
            Pick::Canary(Reason::Cookie)
        );
        // Header before cookie; a value that is neither falls through.
        assert_eq!(
            none.pick(&req(
                path,
                &[("x-canary", "stable"), ("cookie", "canary=canary")]
            )),
            Pick::Stable(Reason::Header)
        );
        assert_eq!(
            none.pick(&req(path, &[("x-canary", "yes")])),
            Pick::Stable(Reason::Session)
        );
    }

    #[test]
    fn a_session_always_lands_on_one_side_and_raising_the_weight_only_moves_it_to_canary() {
        let sessions: Vec<String> = (0..2000).map(|i| format!("sess-{i}")).collect();
        let canaries = |percent: f64| -> Vec<bool> {
            let c = canary(percent);
            sessions
                .iter()
                .map(|s| {
                    let first = c.pick(&req(&format!("/v2/sessions/{s}/stream"), &[]));
                    let again = c.pick(&req("/v2/other", &[("x-session-id", s)]));
                    assert_eq!(first, again, "session {s} moved");
                    assert_eq!(first.reason(), Reason::Session);
                    first.is_canary()
                })
                .collect()
        };
        let five = canaries(5.0);
        let fifty = canaries(50.0);
        let share = |v: &[bool]| v.iter().filter(|c| **c).count();
        // A fixed hash over fixed ids: these counts are exact, not statistical.
        assert!((50..150).contains(&share(&five)), "{}", share(&five));
        assert!((900..1100).contains(&share(&fifty)), "{}", share(&fifty));
        assert!(five.iter().zip(&fifty).all(|(a, b)| !a || *b));
        assert_eq!(share(&canaries(0.0)), 0);
        assert_eq!(share(&canaries(100.0)), 2000);
    }

    #[test]
    fn a_draw_sets_the_pin_cookie_and_nothing_else_does() {
        let c = canary(100.0);
        let drawn = c.pick(&req("/", &[]));
        assert_eq!(drawn, Pick::Canary(Reason::Draw));
        let cookie = c.set_cookie(drawn).unwrap();
        assert!(
            cookie
                .to_str()
                .unwrap()
                .starts_with("canary=canary; Path=/;")
        );
        assert_eq!(c.set_cookie(Pick::Canary(Reason::Session)), None);
        let no_cookie = Canary::new(group("c"), 100.0, None, None);
        assert_eq!(no_cookie.set_cookie(drawn), None);
        assert_eq!(canary(0.0).pick(&req("/", &[])), Pick::Stable(Reason::Draw));
    }
}
