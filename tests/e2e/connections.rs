//! Attacks on connections: half-sent requests held open (slowloris), idle connections piling up,
//! more connections than the process can hold, and one applicant opening event stream after
//! event stream. Each is cut off or refused; real requests keep being served.

use std::time::{Duration, Instant};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use crate::common::{TestApp, spawn_app_with};

fn addr(app: &TestApp) -> String {
    app.base.trim_start_matches("http://").to_string()
}

/// Reads until the server closes the connection (or `within` passes); true when it closed.
async fn closed_by_server(stream: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 1024];
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

#[tokio::test]
async fn half_sent_requests_are_cut_off_at_the_header_deadline() {
    let app = spawn_app_with(&[("EVISA_HEADER_READ_TIMEOUT_SECONDS", "2")]).await;
    let mut attackers = Vec::new();
    for _ in 0..50 {
        let mut s = TcpStream::connect(addr(&app)).await.unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        attackers.push(s);
    }
    let started = Instant::now();
    // Keep trickling a header line a second: activity, but never the end of the headers.
    for round in 0..3 {
        for s in &mut attackers {
            let _ = s
                .write_all(format!("X-Slow-{round}: y\r\n").as_bytes())
                .await;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let mut closed = 0;
    for s in &mut attackers {
        if closed_by_server(s, Duration::from_secs(3)).await {
            closed += 1;
        }
    }
    assert_eq!(closed, 50, "every half-sent request is cut off");
    assert!(started.elapsed() < Duration::from_secs(9));
    // Meanwhile and afterwards, real requests are served.
    assert_eq!(app.get("/healthz", None).await.status, 200);
}

#[tokio::test]
async fn a_slow_but_complete_request_within_the_deadline_is_served() {
    let app = spawn_app_with(&[("EVISA_HEADER_READ_TIMEOUT_SECONDS", "3")]).await;
    let mut s = TcpStream::connect(addr(&app)).await.unwrap();
    for part in [
        "GET /healthz HTTP/1.1\r\n",
        "Host: x\r\n",
        "Connection: close\r\n",
        "\r\n",
    ] {
        s.write_all(part.as_bytes()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let mut answer = String::new();
    s.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed() {
    let app = spawn_app_with(&[("EVISA_IDLE_TIMEOUT_SECONDS", "20")]).await;
    let mut s = TcpStream::connect(addr(&app)).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 512];
    let n = s.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    // Kept alive, then silent on both sides: closed after the idle timeout, not held forever.
    assert!(!closed_by_server(&mut s, Duration::from_secs(15)).await);
    assert!(closed_by_server(&mut s, Duration::from_secs(10)).await);
}

#[tokio::test]
async fn connections_over_the_cap_get_503_and_are_closed() {
    let app = spawn_app_with(&[("EVISA_MAX_CONNECTIONS", "5")]).await;
    let mut held = Vec::new();
    for _ in 0..5 {
        held.push(TcpStream::connect(addr(&app)).await.unwrap());
    }
    let mut extra = TcpStream::connect(addr(&app)).await.unwrap();
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(5), extra.read_to_string(&mut answer))
        .await
        .expect("answered and closed at once")
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("retry-after: 1"), "{answer}");
    assert!(answer.contains("application/problem+json"), "{answer}");
    // A connection given back makes room again.
    drop(held.pop());
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(app.get("/healthz", None).await.status, 200);
}

#[tokio::test]
async fn one_applicant_cannot_hold_event_stream_after_event_stream() {
    let app = spawn_app_with(&[
        ("EVISA_EVENT_STREAMS_PER_APPLICANT", "3"),
        ("EVISA_EVENT_STREAMS_TOTAL", "4"),
    ])
    .await;
    // A payment that stays open (nothing charges it: no worker runs).
    let (token, application) = app.submitted_application().await;
    let r = app
        .pay(
            &token,
            &application,
            "pm_card_visa",
            &uuid::Uuid::now_v7().to_string(),
        )
        .await;
    let payment = r.body["id"].as_str().unwrap().to_string();
    let open = |token: String| {
        let app_url = app.url(&format!("/v1/payments/{payment}/events"));
        let http = app.http.clone();
        async move { http.get(app_url).bearer_auth(token).send().await.unwrap() }
    };
    let mut streams = Vec::new();
    for _ in 0..3 {
        let s = open(token.clone()).await;
        assert_eq!(s.status(), 200);
        streams.push(s);
    }
    let refused = open(token.clone()).await;
    assert_eq!(refused.status(), 429);
    assert!(refused.headers().contains_key("retry-after"));
    // Closing one frees its slot: at once when the stream ends, and for a client that just goes
    // away, when a keep-alive write (every 15 s) finds the connection gone — the first write after
    // the client left only draws a reset, so up to two keep-alives.
    drop(streams.pop());
    let deadline = Instant::now() + Duration::from_secs(45);
    let again = loop {
        let r = open(token.clone()).await;
        if r.status() == 200 {
            break r;
        }
        assert_eq!(r.status(), 429);
        assert!(Instant::now() < deadline, "the slot was never freed");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    streams.push(again);

    // The total cap holds too: another applicant gets one more, then 429.
    let (other, theirs) = app.submitted_application().await;
    let r = app
        .pay(
            &other,
            &theirs,
            "pm_card_visa",
            &uuid::Uuid::now_v7().to_string(),
        )
        .await;
    let theirs_payment = r.body["id"].as_str().unwrap().to_string();
    let url = app.url(&format!("/v1/payments/{theirs_payment}/events"));
    let first = app.http.get(&url).bearer_auth(&other).send().await.unwrap();
    assert_eq!(first.status(), 200);
    let second = app.http.get(&url).bearer_auth(&other).send().await.unwrap();
    assert_eq!(second.status(), 429);
}

#[tokio::test]
async fn an_event_stream_ends_after_its_lifetime() {
    let app = spawn_app_with(&[("EVISA_EVENT_STREAM_MAX_SECONDS", "2")]).await;
    let (token, application) = app.submitted_application().await;
    let r = app
        .pay(
            &token,
            &application,
            "pm_card_visa",
            &uuid::Uuid::now_v7().to_string(),
        )
        .await;
    let payment = r.body["id"].as_str().unwrap();
    let started = Instant::now();
    let body = tokio::time::timeout(
        Duration::from_secs(10),
        app.http
            .get(app.url(&format!("/v1/payments/{payment}/events")))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .text(),
    )
    .await
    .expect("the stream ends by itself")
    .unwrap();
    assert!(started.elapsed() >= Duration::from_secs(2));
    assert!(body.contains("\"status\":\"created\""), "{body}");
}
