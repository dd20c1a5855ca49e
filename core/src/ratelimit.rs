//! Rate limits kept in Redis, shared by every API process: GCRA in one Lua script, with the clock
//! taken from Redis itself so that processes with skewed clocks agree.

use std::time::Duration;

use redis::{Script, aio::ConnectionManager};

/// GCRA over the buckets KEYS[1..n], in order, in one round trip. For bucket i, ARGV[3i-2] is
/// its emission interval in ms (period / rate), ARGV[3i-1] its burst, and ARGV[3i] `1` to count
/// this request against it or `0` only to ask whether one more would be allowed (a peek). Stops
/// at the first bucket that refuses, so the buckets after it are neither asked nor counted.
/// Returns {allowed (1|0), retry_after_ms, the refusing bucket's position (1-based; 0 if none)}.
const GCRA: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for i, key in ipairs(KEYS) do
  local interval = tonumber(ARGV[3 * i - 2])
  local burst = tonumber(ARGV[3 * i - 1])
  local tat = tonumber(redis.call('GET', key)) or now
  if tat < now then tat = now end
  local new_tat = tat + interval
  local allow_at = new_tat - interval * burst
  if allow_at > now then
    return {0, allow_at - now, i}
  end
  if ARGV[3 * i] == '1' then
    redis.call('SET', key, new_tat, 'PX', new_tat - now)
  end
end
return {1, 0, 0}
"#;

/// A limit: `burst` requests at once, refilled at one per `interval`.
#[derive(Debug, Clone, Copy)]
pub struct Quota {
    pub interval: Duration,
    pub burst: u32,
}

impl Quota {
    /// `n` requests per minute, all of which may come at once.
    pub fn per_minute(n: u32) -> Self {
        Self::per(n, Duration::from_secs(60))
    }

    /// `n` requests per `period`, all of which may come at once.
    pub fn per(n: u32, period: Duration) -> Self {
        let n = n.max(1);
        Self {
            interval: (period / n).max(Duration::from_millis(1)),
            burst: n,
        }
    }
}

/// The answer for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allowed,
    /// Refused; the client may try again after this long.
    Limited {
        retry_after: Duration,
    },
}

/// How long a limit waits for Redis before treating it as down.
pub const ANSWER_WITHIN: Duration = Duration::from_millis(250);

/// A Redis connection that gives up quickly while Redis is down (one reconnect attempt per
/// command, half a second each) and reconnects by itself once it is back.
pub async fn connect(url: &str) -> redis::RedisResult<ConnectionManager> {
    let client = redis::Client::open(url)?;
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_number_of_retries(1)
        .set_connection_timeout(Some(Duration::from_millis(500)))
        .set_response_timeout(Some(Duration::from_millis(500)));
    ConnectionManager::new_with_config(client, config).await
}

/// What a request does to a bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Take {
    /// Counts the request.
    Count,
    /// Only asks whether one more would be allowed: for limits on outcomes (failed payments)
    /// that are counted when the outcome happens, elsewhere.
    Peek,
}

/// A GCRA limiter over a Redis connection.
#[derive(Clone)]
pub struct RateLimiter {
    conn: ConnectionManager,
    prefix: String,
    script: std::sync::Arc<Script>,
}

impl RateLimiter {
    pub fn new(conn: ConnectionManager, prefix: &str) -> Self {
        Self {
            conn,
            prefix: prefix.to_string(),
            script: std::sync::Arc::new(Script::new(GCRA)),
        }
    }

    /// Counts one request against `bucket` (e.g. `login:ip:127.0.0.1`). Callers put no PII in the
    /// bucket name: hash it first.
    pub async fn check(&self, bucket: &str, quota: Quota) -> redis::RedisResult<Decision> {
        Ok(self.admit(&[(bucket, quota, Take::Count)]).await?.1)
    }

    /// Whether one more request would be allowed, without counting one.
    #[cfg(test)]
    async fn peek(&self, bucket: &str, quota: Quota) -> redis::RedisResult<Decision> {
        Ok(self.admit(&[(bucket, quota, Take::Peek)]).await?.1)
    }

    /// One request against several buckets, in order and in one round trip to Redis: the first
    /// that refuses ends it (those after it are neither asked nor counted). Returns that
    /// bucket's position with the refusal, or `Allowed` when every bucket allowed the request.
    pub async fn admit(
        &self,
        buckets: &[(&str, Quota, Take)],
    ) -> redis::RedisResult<(usize, Decision)> {
        let mut conn = self.conn.clone();
        let mut invocation = self.script.prepare_invoke();
        for (bucket, quota, take) in buckets {
            invocation
                .key(format!("{}:rl:{bucket}", self.prefix))
                .arg(quota.interval.as_millis() as u64)
                .arg(quota.burst)
                .arg(u8::from(*take == Take::Count));
        }
        // A Redis that does not answer at once is treated as down: each limit's policy for an
        // outage then applies, instead of the request waiting out the client's reconnects.
        let (allowed, retry_ms, position): (i64, i64, usize) =
            tokio::time::timeout(ANSWER_WITHIN, invocation.invoke_async(&mut conn))
                .await
                .map_err(|_| {
                    redis::RedisError::from((redis::ErrorKind::Io, "Redis did not answer in time"))
                })??;
        Ok(if allowed == 1 {
            (0, Decision::Allowed)
        } else {
            (
                position.saturating_sub(1),
                Decision::Limited {
                    retry_after: Duration::from_millis(retry_ms.max(1) as u64),
                },
            )
        })
    }
}

/// The bucket of an application's failed payment attempts (counted when a payment fails).
pub fn failed_payments_of_application(id: crate::ids::ApplicationId) -> String {
    format!("failed:application:{id}")
}

/// The bucket of an applicant's failed payment attempts, over all their applications.
pub fn failed_payments_of_applicant(id: crate::ids::UserId) -> String {
    format!("failed:applicant:{id}")
}

/// A short, stable, non-reversible name for a value (an email) to use in a bucket key.
pub fn bucket_digest(value: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, value.as_bytes());
    digest.as_ref()[..12]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Counts a payment that just became `failed` against each of its applications' attempt limits
/// and once against its applicant's, which are checked before another attempt starts (so card
/// testing stops at the limit, for a group payment as for a single one). Whoever applied the
/// decline counts it: the worker from the gateway's answer, the API from a webhook. A limiter
/// that is down leaves it uncounted (logged).
pub async fn count_failed_payment(
    limiter: &RateLimiter,
    limits: &crate::config::LimitSettings,
    applications: &[crate::ids::ApplicationId],
    applicant: crate::ids::UserId,
) {
    let buckets = applications
        .iter()
        .map(|a| {
            (
                failed_payments_of_application(*a),
                limits.failures_per_application(),
            )
        })
        .chain([(
            failed_payments_of_applicant(applicant),
            limits.failures_per_applicant(),
        )]);
    for (bucket, quota) in buckets {
        if let Err(e) = limiter.check(&bucket, quota).await {
            tracing::warn!(error = %e, %applicant, "failed attempt not counted: rate limiter unavailable");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn limiter() -> RateLimiter {
        let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
        let client = redis::Client::open(url).unwrap();
        let conn = ConnectionManager::new(client)
            .await
            .expect("Redis must be running for tests");
        RateLimiter::new(conn, &format!("test-{}", uuid::Uuid::now_v7()))
    }

    #[tokio::test]
    async fn burst_then_refuse_with_retry_after() {
        let limiter = limiter().await;
        let quota = Quota {
            interval: Duration::from_secs(20),
            burst: 3,
        };
        for _ in 0..3 {
            assert_eq!(limiter.check("b", quota).await.unwrap(), Decision::Allowed);
        }
        match limiter.check("b", quota).await.unwrap() {
            Decision::Limited { retry_after } => {
                assert!(retry_after <= Duration::from_secs(20), "{retry_after:?}");
                assert!(retry_after > Duration::from_secs(18), "{retry_after:?}");
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
        // Another bucket is independent.
        assert_eq!(limiter.check("c", quota).await.unwrap(), Decision::Allowed);
    }

    #[tokio::test]
    async fn peeking_counts_nothing() {
        let limiter = limiter().await;
        let quota = Quota {
            interval: Duration::from_secs(20),
            burst: 2,
        };
        for _ in 0..5 {
            assert_eq!(limiter.peek("p", quota).await.unwrap(), Decision::Allowed);
        }
        limiter.check("p", quota).await.unwrap();
        assert_eq!(limiter.peek("p", quota).await.unwrap(), Decision::Allowed);
        limiter.check("p", quota).await.unwrap();
        assert!(matches!(
            limiter.peek("p", quota).await.unwrap(),
            Decision::Limited { .. }
        ));
    }

    #[tokio::test]
    async fn several_buckets_in_one_call_stop_at_the_first_refusal() {
        let limiter = limiter().await;
        let one = Quota {
            interval: Duration::from_secs(20),
            burst: 1,
        };
        let both = [("a", one, Take::Count), ("b", one, Take::Count)];
        assert_eq!(limiter.admit(&both).await.unwrap(), (0, Decision::Allowed));
        // "b" counted the request too: it is now empty.
        assert!(matches!(
            limiter.peek("b", one).await.unwrap(),
            Decision::Limited { .. }
        ));
        // A refusal by the first bucket leaves the second untouched.
        let (at, decision) = limiter
            .admit(&[("a", one, Take::Count), ("c", one, Take::Count)])
            .await
            .unwrap();
        assert_eq!(at, 0);
        assert!(matches!(decision, Decision::Limited { .. }));
        assert_eq!(limiter.peek("c", one).await.unwrap(), Decision::Allowed);
        // Peeks count nothing, and the refusing bucket is named by its position.
        let peeks = [
            ("c", one, Take::Peek),
            ("d", one, Take::Peek),
            ("b", one, Take::Peek),
        ];
        let (at, decision) = limiter.admit(&peeks).await.unwrap();
        assert_eq!(at, 2);
        assert!(matches!(decision, Decision::Limited { .. }));
        assert_eq!(limiter.peek("c", one).await.unwrap(), Decision::Allowed);
        assert_eq!(limiter.peek("d", one).await.unwrap(), Decision::Allowed);
    }

    #[tokio::test]
    async fn refills_at_the_emission_interval() {
        let limiter = limiter().await;
        let quota = Quota {
            interval: Duration::from_millis(200),
            burst: 1,
        };
        assert_eq!(limiter.check("r", quota).await.unwrap(), Decision::Allowed);
        assert!(matches!(
            limiter.check("r", quota).await.unwrap(),
            Decision::Limited { .. }
        ));
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert_eq!(limiter.check("r", quota).await.unwrap(), Decision::Allowed);
    }

    #[test]
    fn per_minute_quota() {
        let q = Quota::per_minute(10);
        assert_eq!(q.interval, Duration::from_secs(6));
        assert_eq!(q.burst, 10);
        assert_eq!(bucket_digest("ann@example.org").len(), 24);
    }
}
