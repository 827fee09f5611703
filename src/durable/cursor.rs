//! `Stream-Cursor` (§10.1): the 20-second interval number since 2024-10-09, never at or
//! below the cursor the client echoed, so CDN caches of live reads move on.

use crate::store::now_ms;

/// 2024-10-09T00:00:00Z in Unix milliseconds.
const EPOCH_MS: u64 = 1_728_432_000_000;
/// Interval length.
const INTERVAL_MS: u64 = 20_000;

/// The cursor to answer a live read whose request echoed `client` (`cursor=`).
pub fn next(client: Option<&str>) -> String {
    let current = now_ms().saturating_sub(EPOCH_MS) / INTERVAL_MS;
    match client.and_then(|c| c.parse::<u64>().ok()) {
        Some(echoed) if echoed >= current => {
            // 1 to 3600 seconds of jitter, in whole intervals (at least one).
            let random = u64::from(uuid::Uuid::new_v4().as_u128() as u16);
            let jitter_secs = 1 + random % 3600;
            let intervals = jitter_secs.div_ceil(INTERVAL_MS / 1000).max(1);
            echoed.saturating_add(intervals).to_string()
        }
        _ => current.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_never_go_back() {
        let now: u64 = next(None).parse().unwrap();
        assert!(now > 0);
        let ahead = (now + 10).to_string();
        assert!(next(Some(&ahead)).parse::<u64>().unwrap() > now + 10);
        assert_eq!(next(Some("1")), now.to_string());
        assert_eq!(next(Some("junk")), now.to_string());
    }
}
