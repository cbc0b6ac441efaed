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
    app.wait_server("post", "retried", |s| s["consecutive_failures"].as_u64() >= Some(2))
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
        .require_bearer(
            BearerAuth::new(idp.store()).authorization_server(redirector.url()),
        )
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
