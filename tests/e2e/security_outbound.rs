//! Outbound requests (issue 9, items 9-11; ADR 0011): no redirect carries a
//! secret, OAuth2 discovery trusts only what it should, and numbers an
//! upstream or an identity provider sends cannot make the engine hammer,
//! hang or panic.
//!
//! The redirect tests point the engine (directly, or through what an
//! upstream or its metadata names) at a `Redirector` that answers 307 to a
//! `Recorder` on another port, then prove the recorder received nothing at
//! all, and that the error names the redirect with the `Location` redacted.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::helpers::{servers_yaml, spawn_app, TestApp, DEADLINE, FAST};
use crate::support::recorder::{Recorder, Redirector};
use crate::support::token_endpoint::TokenEndpoint;
use crate::support::upstream::{BearerAuth, GetStream, TestUpstream, TokenStore};

const STATIC_TOKEN: &str = "static-bearer-9f9f";
const HEADER_SECRET: &str = "hdr-secret-7a7a";
const CLIENT_SECRET: &str = "client-secret-3c3c";

/// A YAML double-quoted scalar (a JSON string is one).
fn q(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

fn text(s: &Value, key: &str) -> String {
    s[key].as_str().unwrap_or_default().to_owned()
}

/// Both the server's and its token's last error.
fn errors(s: &Value) -> String {
    format!(
        "{} | {} | {}",
        text(s, "last_error"),
        s["auth"]["last_token_error"].as_str().unwrap_or_default(),
        text(s, "push_stream_error")
    )
}

/// The error names the redirect: the status, the redacted `Location` (on
/// `target`) and that it was not followed; and never the query.
fn names_the_redirect(error: &str, target: &str) -> bool {
    error.contains("307")
        && error.contains("redirects are not followed")
        && error.contains(target)
        && !error.contains("redirect-secret")
}

/// Static bearer + a static header, the two things a redirect must not carry.
fn secrets(more: &str) -> String {
    format!(
        "headers: {{ X-Api-Key: {HEADER_SECRET} }}, auth: {{ type: bearer, token: {STATIC_TOKEN} }}{more}"
    )
}

async fn wait_error(app: &TestApp, name: &str, target: &str) -> Value {
    app.wait_server(name, "an error naming the redirect", |s| {
        names_the_redirect(&errors(s), target)
    })
    .await
}

fn assert_nothing_received(recorder: &Recorder) {
    let got = recorder.requests();
    assert!(
        got.is_empty(),
        "the redirect target received {} request(s): {got:#?}",
        got.len()
    );
}

#[actix_web::test]
async fn an_mcp_post_redirect_is_not_followed_and_carries_nothing() {
    let recorder = Recorder::start().unwrap();
    let redirector = Redirector::to(&recorder.url()).unwrap();
    let entry = format!(
        "{{ url: {}, transport: streamable-http, {} }}",
        q(&format!("{}/mcp", redirector.url())),
        secrets("")
    );
    let app = spawn_app(&format!("{FAST}{}", servers_yaml(&[("post", entry)]))).await;
    let s = wait_error(&app, "post", &recorder.url()).await;
    assert_eq!(s["state"], "degraded", "{s:#}");
    // A few retries have happened meanwhile; none reached the recorder.
    app.wait_server("post", "retried", |s| {
        s["consecutive_failures"].as_u64() >= Some(2)
    })
    .await;
    assert_nothing_received(&recorder);
    app.stop().await;
}

#[actix_web::test]
async fn a_push_stream_redirect_is_not_followed_and_carries_nothing() {
    let recorder = Recorder::start().unwrap();
    let store = TokenStore::new();
    store.insert(STATIC_TOKEN, None);
    let up = TestUpstream::builder()
        .tools(2)
        .require_bearer(BearerAuth::new(store))
        .required_header("X-Api-Key", HEADER_SECRET)
        .get_stream(GetStream::RedirectTo(recorder.port()))
        .start()
        .unwrap();
    let entry = format!(
        "{{ url: {}, transport: streamable-http, {} }}",
        q(&up.url()),
        secrets("")
    );
    let app = spawn_app(&format!("{FAST}{}", servers_yaml(&[("push", entry)]))).await;
    app.wait_healthy("push", 2).await;
    let s = app
        .wait_server("push", "a push stream error naming the redirect", |s| {
            names_the_redirect(&text(s, "push_stream_error"), &recorder.url())
        })
        .await;
    assert_eq!(s["state"], "healthy", "discovery is not affected: {s:#}");
    let deadline = Instant::now() + DEADLINE;
    while up.get_log().len() < 2 {
        assert!(Instant::now() < deadline, "the push stream never retried");
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
    assert_nothing_received(&recorder);
    app.stop().await;
}

#[actix_web::test]
async fn a_legacy_sse_redirect_is_not_followed_and_carries_nothing() {
    let recorder = Recorder::start().unwrap();
    let redirector = Redirector::to(&recorder.url()).unwrap();
    let entry = format!(
        "{{ url: {}, transport: sse, {} }}",
        q(&format!("{}/sse", redirector.url())),
        secrets("")
    );
    let app = spawn_app(&format!("{FAST}{}", servers_yaml(&[("legacy", entry)]))).await;
    wait_error(&app, "legacy", &recorder.url()).await;
    assert_nothing_received(&recorder);
    app.stop().await;
}

/// A token endpoint answering 307, with the secret in the form (`post`) and
/// in the `Authorization` header (`basic`): the recorder sees neither.
#[actix_web::test]
async fn a_token_request_redirect_is_not_followed_and_carries_no_secret() {
    let recorder = Recorder::start().unwrap();
    let redirector = Redirector::to(&recorder.url()).unwrap();
    let up = TestUpstream::builder()
        .require_bearer(BearerAuth::new(TokenStore::new()))
        .start()
        .unwrap();
    let entry = |client_auth: &str| {
        format!(
            "{{ url: {}, transport: streamable-http, auth: {{ type: oauth2, token_url: {}, \
             client_id: cid, client_secret: {CLIENT_SECRET}, client_auth: {client_auth} }} }}",
            q(&up.url()),
            q(&format!("{}/token", redirector.url())),
        )
    };
    let app = spawn_app(&format!(
        "{FAST}{}",
        servers_yaml(&[("post", entry("post")), ("basic", entry("basic"))])
    ))
    .await;
    for name in ["post", "basic"] {
        let s = wait_error(&app, name, &recorder.url()).await;
        assert!(!errors(&s).contains(CLIENT_SECRET), "{s:#}");
    }
    assert_nothing_received(&recorder);
    assert_eq!(up.bearer_tokens().len(), 0);
    app.stop().await;
}

/// Discovery: protected resource metadata answering 307, and authorization
/// server metadata answering 307. Nothing reaches the recorder, and no
/// token request is made anywhere.
#[actix_web::test]
async fn metadata_redirects_are_not_followed() {
    let recorder = Recorder::start().unwrap();
    let redirector = Redirector::to(&recorder.url()).unwrap();
    let idp = TokenEndpoint::builder().start().unwrap();
    // The challenge names protected resource metadata on the redirector.
    let prm = TestUpstream::builder()
        .require_bearer(idp.bearer_auth().resource_metadata_url(format!(
            "{}/.well-known/oauth-protected-resource/mcp",
            redirector.url()
        )))
        .start()
        .unwrap();
    // The metadata names an authorization server on the redirector.
    let asm = TestUpstream::builder()
        .require_bearer(BearerAuth::new(idp.store()).authorization_server(redirector.url()))
        .start()
        .unwrap();
    let entry = |url: &str| {
        format!(
            "{{ url: {}, transport: streamable-http, auth: {{ type: oauth2, \
             client_id: cid, client_secret: {CLIENT_SECRET}, client_auth: post }} }}",
            q(url)
        )
    };
    let app = spawn_app(&format!(
        "{FAST}{}",
        servers_yaml(&[("prm", entry(&prm.url())), ("asm", entry(&asm.url()))])
    ))
    .await;
    for name in ["prm", "asm"] {
        wait_error(&app, name, &recorder.url()).await;
    }
    assert_nothing_received(&recorder);
    assert_eq!(idp.requests(), 0, "no token request without metadata");
    app.stop().await;
}

// ------------------------------------------------------ OAuth2 discovery

/// `auth.allowed_issuers`: the upstream's metadata names another
/// authorization server; it is refused before anything is sent to it (not
/// even its metadata is fetched), while a listed one works.
#[actix_web::test]
async fn allowed_issuers_keep_the_secret_from_an_unlisted_issuer() {
    let trusted = TokenEndpoint::builder().start().unwrap();
    let other = TokenEndpoint::builder()
        .store(trusted.store())
        .start()
        .unwrap();
    let lured = TestUpstream::builder()
        .require_bearer(other.bearer_auth())
        .start()
        .unwrap();
    let fine = TestUpstream::builder()
        .tools(3)
        .require_bearer(trusted.bearer_auth())
        .start()
        .unwrap();
    let entry = |url: &str| {
        format!(
            "{{ url: {}, transport: streamable-http, auth: {{ type: oauth2, client_id: cid, \
             client_secret: {CLIENT_SECRET}, client_auth: post, allowed_issuers: [{}] }} }}",
            q(url),
            q(&trusted.issuer())
        )
    };
    let app = spawn_app(&format!(
        "{FAST}{}",
        servers_yaml(&[("lured", entry(&lured.url())), ("fine", entry(&fine.url()))])
    ))
    .await;
    app.wait_healthy("fine", 3).await;
    let s = app
        .wait_server("lured", "refused by allowed_issuers", |s| {
            errors(s).contains("is not in auth.allowed_issuers")
        })
        .await;
    assert!(errors(&s).contains(&other.issuer()), "{s:#}");
    assert!(!errors(&s).contains(CLIENT_SECRET), "{s:#}");
    assert_eq!(
        other.requests(),
        0,
        "a token request went to the unlisted issuer"
    );
    assert!(
        other.metadata_requests().is_empty(),
        "the unlisted issuer was contacted: {:?}",
        other.metadata_requests()
    );
    assert_eq!(
        trusted.requests(),
        1,
        "only the listed issuer got a request"
    );
    app.stop().await;
}

// ------------------------------------------------------ untrusted numbers

/// Token endpoints answering `expires_in` 0, 1 and u64::MAX: none makes
/// the refresher hammer (at most about one request a second), and the huge
/// one neither panics nor expires beyond a year.
#[actix_web::test]
async fn tiny_and_huge_expires_in_neither_hammer_nor_panic() {
    let mut idps = Vec::new();
    let mut ups = Vec::new();
    let mut entries = Vec::new();
    for (name, expires_in) in [("zero", 0), ("one", 1), ("huge", u64::MAX)] {
        let idp = TokenEndpoint::builder()
            .expires_in(Some(expires_in))
            .start()
            .unwrap();
        let up = TestUpstream::builder()
            .tools(2)
            .require_bearer(idp.bearer_auth())
            .start()
            .unwrap();
        entries.push((
            name,
            format!(
                "{{ url: {}, transport: streamable-http, auth: {{ type: oauth2, token_url: {}, \
                 client_id: cid, client_secret: {CLIENT_SECRET} }} }}",
                q(&up.url()),
                q(&idp.token_url())
            ),
        ));
        idps.push(idp);
        ups.push(up);
    }
    let app = spawn_app(&format!("{FAST}{}", servers_yaml(&entries))).await;
    let s = app.wait_healthy("huge", 2).await;
    let at = s["auth"]["token_expires_at"].as_str().unwrap();
    let at = chrono::DateTime::parse_from_rfc3339(at).unwrap();
    let days = (at.with_timezone(&chrono::Utc) - chrono::Utc::now()).num_days();
    assert!((364..=365).contains(&days), "expires in {days} days: {s:#}");
    let deadline = Instant::now() + DEADLINE;
    while idps.iter().any(|idp| idp.requests() == 0) {
        assert!(Instant::now() < deadline, "no token requests");
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
    let before: Vec<u64> = idps.iter().map(|idp| idp.requests()).collect();
    let window = Duration::from_secs(3);
    actix_rt::time::sleep(window).await;
    for ((name, _), (idp, before)) in entries.iter().zip(idps.iter().zip(before)) {
        let during = idp.requests() - before;
        eprintln!("{name}: {during} token requests in {window:?}");
        assert!(
            during <= 5,
            "{name}: {during} token requests in {window:?} (at most one a second)"
        );
    }
    assert_eq!(idps[2].requests(), 1, "a year-long token is not refreshed");
    app.wait_healthy("huge", 2).await;
    app.stop().await;
}

/// A push stream whose server says `retry: 999999999999` (31 years) then
/// drops it: the reconnection comes within `backoff.max` (1 s here).
#[actix_web::test]
async fn a_huge_sse_retry_is_capped_at_backoff_max() {
    let up = TestUpstream::builder()
        .tools(1)
        .sse_style(crate::support::upstream::SseStyle {
            retry_ms: Some(999_999_999_999),
            ..Default::default()
        })
        .get_stream(GetStream::ResetAfter(Duration::from_millis(300)))
        .start()
        .unwrap();
    let entry = format!("{{ url: {}, transport: streamable-http }}", q(&up.url()));
    let app = spawn_app(&format!("{FAST}{}", servers_yaml(&[("retry", entry)]))).await;
    app.wait_healthy("retry", 1).await;
    let deadline = Instant::now() + DEADLINE;
    while up.get_log().len() < 2 {
        assert!(
            Instant::now() < deadline,
            "never reconnected after the reset: {:?}",
            app.server("retry").await
        );
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
    let log = up.get_log();
    let gap = log[1].at.saturating_duration_since(log[0].at);
    // 300 ms open, then at most backoff.max (1 s), plus scheduling slack.
    assert!(gap < Duration::from_secs(4), "reconnected after {gap:?}");
    app.stop().await;
}
