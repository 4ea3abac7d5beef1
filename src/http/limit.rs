//! Per-client-IP rate limit on POST, PATCH and DELETE (RFC 9725 §5 asks WHIP servers for
//! one): a token bucket per address, `rate` per second with a burst of twice that.

use super::error::ApiError;
use axum::http::{header, StatusCode};
use dashmap::DashMap;
use std::net::IpAddr;
use std::time::Instant;

/// Buckets are forgotten after this long without requests (when the table is large).
const IDLE_SECS: f64 = 60.0;
/// Table size that triggers forgetting idle buckets.
const PRUNE_AT: usize = 10_000;

/// Token buckets by client IP.
#[derive(Default)]
pub struct RateLimiter {
    buckets: DashMap<IpAddr, (f64, Instant)>,
}

impl RateLimiter {
    /// Takes one token for `ip` at `now`, or says how long to wait. `rate` 0: no limit.
    pub fn check(&self, ip: IpAddr, rate: u32, now: Instant) -> Result<(), ApiError> {
        if rate == 0 {
            return Ok(());
        }
        let rate = f64::from(rate);
        let burst = rate * 2.0;
        if self.buckets.len() > PRUNE_AT {
            self.buckets
                .retain(|_, (_, at)| now.saturating_duration_since(*at).as_secs_f64() < IDLE_SECS);
        }
        let mut bucket = self.buckets.entry(ip).or_insert((burst, now));
        let (tokens, at) = *bucket;
        let refilled = (tokens + now.saturating_duration_since(at).as_secs_f64() * rate).min(burst);
        if refilled >= 1.0 {
            *bucket = (refilled - 1.0, now);
            Ok(())
        } else {
            *bucket = (refilled, now);
            Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too many requests from this address; slow down",
            )
            .with_header(header::RETRY_AFTER, "1"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_burst_then_the_rate() {
        let l = RateLimiter::default();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        let t0 = Instant::now();
        for _ in 0..10 {
            assert!(l.check(ip, 5, t0).is_ok());
        }
        let refused = l.check(ip, 5, t0).unwrap_err();
        assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
        assert!(
            l.check(other, 5, t0).is_ok(),
            "another address has its own bucket"
        );
        assert!(
            l.check(ip, 5, t0 + Duration::from_millis(200)).is_ok(),
            "one token per 200 ms"
        );
        assert!(l.check(ip, 5, t0 + Duration::from_millis(200)).is_err());
        assert!(l.check(ip, 0, t0).is_ok(), "0 disables");
    }
}
