//! `evisa bench payments`: load against a running service (e.g. `cargo run --release`), printing
//! figures. Card payments go POST → job → sandbox → `succeeded`; latency is measured from the
//! POST to the `succeeded` event on the payment's event stream.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::StreamExt;
use serde_json::{Value, json};

use super::probe::Probe;

/// What to run.
pub struct Bench {
    pub base: String,
    /// The service's database, its process and the postmaster's: when given, the run's commits,
    /// statements and CPU per payment are printed too.
    pub probe: Option<Probe>,
    /// Payments per second to offer; 0 runs closed-loop at `concurrency` for maximum throughput.
    pub rate: u32,
    pub seconds: u64,
    pub concurrency: usize,
}

async fn post(
    http: &reqwest::Client,
    url: String,
    token: Option<&str>,
    body: Value,
) -> anyhow::Result<Value> {
    let mut req = http.post(url).json(&body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await?;
    let status = resp.status();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        bail!("HTTP {status}: {body}");
    }
    Ok(body)
}

/// Submitted applications ready to pay, with their owners' tokens.
async fn prepare(
    http: &reqwest::Client,
    base: &str,
    count: usize,
) -> anyhow::Result<Vec<(String, String)>> {
    let arrival = (chrono::Utc::now() + chrono::Days::new(30))
        .date_naive()
        .to_string();
    // An applicant pays for a few applications (a family), so that concurrent payers are
    // different applicants, as they are in life (each may follow only so many event streams).
    let accounts = (count / 50).clamp(64, 400);
    let tokens: Vec<String> = futures_util::stream::iter(0..accounts)
        .map(|_| async move {
            let creds = json!({"email": format!("bench-{}@example.org", uuid::Uuid::now_v7().simple()), "password": "bench password 1234"});
            post(
                http,
                format!("{base}/v1/auth/register"),
                None,
                creds.clone(),
            )
            .await?;
            let login = post(http, format!("{base}/v1/auth/login"), None, creds).await?;
            anyhow::Ok(
                login["access_token"]
                    .as_str()
                    .context("no token")?
                    .to_string(),
            )
        })
        .buffer_unordered(4)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<_>>()?;
    let fields = json!({"full_name": "Bench Mark", "passport_number": "B1234567", "date_of_birth": "1990-01-01",
        "nationality": "US", "visa_type": "tourist", "processing_speed": "standard", "intended_arrival_date": arrival});
    let made = futures_util::stream::iter(0..count)
        .map(|i| {
            let token = tokens[i % tokens.len()].clone();
            let fields = fields.clone();
            async move {
                let app = post(
                    http,
                    format!("{base}/v1/applications"),
                    Some(&token),
                    fields,
                )
                .await?;
                let id = app["id"].as_str().context("no id")?.to_string();
                post(
                    http,
                    format!("{base}/v1/applications/{id}/submit"),
                    Some(&token),
                    Value::Null,
                )
                .await?;
                anyhow::Ok((token, id))
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
    made.into_iter().collect()
}

/// Pays one application and waits for `succeeded` on its event stream; returns the latency.
async fn pay(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    application: &str,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let resp = http
        .post(format!("{base}/v1/applications/{application}/payments"))
        .bearer_auth(token)
        .header("idempotency-key", uuid::Uuid::now_v7().to_string())
        .json(&json!({"provider": "stripe", "payment_method": "pm_card_visa"}))
        .send()
        .await?;
    if resp.status() != 202 {
        bail!("payment POST answered {}", resp.status());
    }
    let payment: Value = resp.json().await?;
    let id = payment["id"].as_str().context("no payment id")?;
    let events = http
        .get(format!("{base}/v1/payments/{id}/events"))
        .bearer_auth(token)
        .send()
        .await?;
    let mut stream = events.bytes_stream();
    let mut text = String::new();
    while let Some(chunk) = stream.next().await {
        text.push_str(&String::from_utf8_lossy(&chunk?));
        if text.contains("\"status\":\"succeeded\"") {
            return Ok(started.elapsed());
        }
        if text.contains("\"status\":\"failed\"") || text.contains("\"status\":\"expired\"") {
            bail!("payment {id} did not succeed");
        }
    }
    bail!("event stream of {id} ended before success")
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

pub async fn run(b: Bench) -> anyhow::Result<()> {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()?;
    let base = b.base.trim_end_matches('/').to_string();
    let planned = if b.rate == 0 {
        (b.concurrency as u64 * b.seconds * 40) as usize
    } else {
        (u64::from(b.rate) * b.seconds) as usize
    };
    eprintln!("preparing {planned} submitted applications...");
    let apps = prepare(&http, &base, planned).await?;
    eprintln!("paying...");
    let before = match &b.probe {
        Some(p) => Some(p.read().await?),
        None => None,
    };
    let started = Instant::now();
    let deadline = started + Duration::from_secs(b.seconds);
    let results: Vec<anyhow::Result<Duration>> = if b.rate == 0 {
        // Closed loop: `concurrency` payers, each paying the next application as soon as the last
        // one succeeded, until time is up.
        let next = std::sync::atomic::AtomicUsize::new(0);
        let payers = (0..b.concurrency).map(|_| {
            let (http, base, apps, next) = (&http, &base, &apps, &next);
            async move {
                let mut out = Vec::new();
                while Instant::now() < deadline {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some((token, app)) = apps.get(i) else {
                        break;
                    };
                    out.push(pay(http, base, token, app).await);
                }
                out
            }
        });
        futures_util::future::join_all(payers)
            .await
            .into_iter()
            .flatten()
            .collect()
    } else {
        // Open loop: one payment every 1/rate s whatever the answers, as real traffic arrives.
        let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(b.rate)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let mut tasks = Vec::new();
        for (token, app) in apps {
            tick.tick().await;
            let (http, base) = (http.clone(), base.clone());
            tasks.push(tokio::spawn(async move {
                pay(&http, &base, &token, &app).await
            }));
        }
        futures_util::future::join_all(tasks)
            .await
            .into_iter()
            .map(|r| r.map_err(anyhow::Error::from).and_then(|r| r))
            .collect()
    };
    let elapsed = started.elapsed();
    let settled = match &b.probe {
        Some(p) => Some(settle(p).await?),
        None => None,
    };
    let mut ok: Vec<Duration> = results
        .iter()
        .filter_map(|r| r.as_ref().ok().copied())
        .collect();
    let failed = results.len() - ok.len();
    if let Some(Err(e)) = results.iter().find(|r| r.is_err()) {
        eprintln!("first failure: {e:#}");
    }
    ok.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "payments: {} succeeded, {failed} failed in {:.1} s = {:.1} succeeded/s ({})",
        ok.len(),
        elapsed.as_secs_f64(),
        ok.len() as f64 / elapsed.as_secs_f64(),
        if b.rate == 0 {
            format!("closed loop, {} payers", b.concurrency)
        } else {
            format!("offered {} /s", b.rate)
        }
    );
    println!(
        "POST -> succeeded on the event stream: p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        ms(percentile(&ok, 0.50)),
        ms(percentile(&ok, 0.90)),
        ms(percentile(&ok, 0.99)),
        ms(percentile(&ok, 1.0))
    );
    if let (Some(probe), Some(before), Some(after)) = (&b.probe, before, settled) {
        before.cost_until(&after, ok.len()).print("per payment");
        if let Some(mb) = probe.server_peak_rss_mb() {
            println!("service peak RSS: {mb:.0} MB");
        }
    }
    Ok(())
}

/// Waits until the last payments' webhooks have arrived and been applied, then reads the probe:
/// a payment's cost includes its webhook.
async fn settle(probe: &Probe) -> anyhow::Result<super::probe::Reading> {
    tokio::time::sleep(Duration::from_millis(500)).await;
    for _ in 0..100 {
        if probe.unprocessed_callbacks().await? == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    probe.read().await
}
