//! `discovery.max_concurrent_attempts` (ADR 0026): the engine never has
//! more discovery attempts in flight than the limit, across every
//! upstream, and a hung upstream's attempt gives its slot back instead of
//! holding the others up for its whole `request_timeout`.

use std::time::Duration;

use crate::helpers::{http, servers_yaml, spawn_app};
use crate::support::upstream::{hanging_server, InFlightProbe, Methods, TestUpstream};

fn discovery(limit: usize, request_timeout: &str) -> String {
    format!(
        "discovery:\n  poll_interval: 10m\n  request_timeout: {request_timeout}\n  \
         connect_timeout: 2s\n  backoff: {{ initial: 100ms, max: 1s }}\n  \
         protocol: 2025-11-25\n  max_concurrent_attempts: {limit}\n"
    )
}

fn names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("u{i}")).collect()
}

async fn metric(app: &crate::helpers::TestApp, name: &str) -> Option<f64> {
    let mut res = app
        .client
        .get(format!("{}/metrics", app.base))
        .send()
        .await
        .unwrap();
    let body = res.body().limit(1 << 22).await.unwrap();
    let text = String::from_utf8_lossy(&body).into_owned();
    text.lines()
        .find_map(|line| line.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
}

#[actix_web::test]
async fn attempts_in_flight_never_exceed_the_limit_across_upstreams() {
    const N: usize = 24;
    const LIMIT: usize = 3;
    let probe = InFlightProbe::default();
    // Each handshake takes a while, so attempts overlap unless bounded.
    let ups: Vec<TestUpstream> = (0..N)
        .map(|_| {
            TestUpstream::builder()
                .tools(2)
                .delay(Duration::from_millis(300))
                .delay_on(Methods::only(["initialize"]))
                .in_flight(probe.clone())
                .start()
                .unwrap()
        })
        .collect();
    let names = names(N);
    let entries: Vec<(&str, String)> = names
        .iter()
        .zip(&ups)
        .map(|(n, u)| (n.as_str(), http(&u.url())))
        .collect();
    let app = spawn_app(&format!(
        "{}{}",
        discovery(LIMIT, "5s"),
        servers_yaml(&entries)
    ))
    .await;
    for name in &names {
        app.wait_healthy(name, 2).await;
    }
    let bounded = probe.max();
    assert!(
        (1..=LIMIT).contains(&bounded),
        "{bounded} requests were in flight at once with max_concurrent_attempts {LIMIT}"
    );
    assert_eq!(
        metric(&app, "mcp_discovery_attempts_running").await,
        Some(0.0)
    );
    assert_eq!(
        metric(&app, "mcp_discovery_attempts_waiting").await,
        Some(0.0)
    );
    app.stop().await;

    // The same servers and a limit above their count: the probe sees the
    // attempts overlap, so the bound above is the gate's doing.
    let unbounded = InFlightProbe::default();
    for up in &ups {
        up.handle()
            .update(|b| b.in_flight = Some(unbounded.clone()));
    }
    let app = spawn_app(&format!(
        "{}{}",
        discovery(4 * N, "5s"),
        servers_yaml(&entries)
    ))
    .await;
    for name in &names {
        app.wait_healthy(name, 2).await;
    }
    assert!(
        unbounded.max() > LIMIT,
        "only {} at once without a bound: the probe does not see overlap",
        unbounded.max()
    );
    app.stop().await;
    for up in ups {
        up.stop().await;
    }
}

#[actix_web::test]
async fn a_hung_upstream_gives_its_slot_back_and_the_others_get_through() {
    // One slot, two upstreams that accept and never answer (a 60 s
    // request timeout) ahead of three healthy ones in start order: the
    // healthy ones are admitted once the hung attempts pass the hold
    // (2 s each), not after their 60 s.
    let hung: Vec<_> = (0..2).map(|_| hanging_server().unwrap()).collect();
    let ups: Vec<TestUpstream> = (0..3)
        .map(|_| TestUpstream::builder().tools(1).start().unwrap())
        .collect();
    let mut entries = vec![("h0", http(&hung[0].url())), ("h1", http(&hung[1].url()))];
    for (name, up) in ["a", "b", "c"].into_iter().zip(&ups) {
        entries.push((name, http(&up.url())));
    }
    let app = spawn_app(&format!(
        "{}{}",
        discovery(1, "60s"),
        servers_yaml(&entries)
    ))
    .await;
    for name in ["a", "b", "c"] {
        app.wait_healthy(name, 1).await;
    }
    for h in ["h0", "h1"] {
        let (_, view) = app.get(&format!("/v1/servers/{h}")).await;
        assert_eq!(
            view["state"], "connecting",
            "{h}'s attempt goes on after giving its slot back: {view}"
        );
    }
    assert!(hung.iter().all(|h| h.accepted() >= 1));
    app.stop().await;
    for up in ups {
        up.stop().await;
    }
}
