//! The OpenAPI document: the committed copy is current, the served one is
//! the committed one, every route of the table is described and every
//! described operation is routed, and real answers decode into the
//! described shapes (which refuse unknown fields).

use std::collections::BTreeSet;
use std::path::PathBuf;

use actix_web::http::StatusCode;
use actix_web::test::TestRequest;
use serde_json::Value;

use super::super::openapi::{self as doc, document};
use super::{call, harness, json, ready_now};

fn committed_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/openapi.json")
}

/// `UPDATE_OPENAPI=1 cargo test --lib api::tests::openapi` rewrites the
/// committed copy.
#[test]
fn committed_document_is_current() {
    let path = committed_path();
    if std::env::var_os("UPDATE_OPENAPI").is_some_and(|v| v == "1") {
        std::fs::write(&path, document()).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == document(),
        "{} is not the generated document. Hint: UPDATE_OPENAPI=1 cargo test --lib api::tests::openapi",
        path.display()
    );
}

#[test]
fn document_is_openapi_3_1_with_the_shared_errors_everywhere() {
    let v: Value = serde_json::from_str(document()).unwrap();
    assert!(
        v["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        v["openapi"]
    );
    for (path, method, op) in operations(&v) {
        for (status, _) in doc::SHARED_ERRORS {
            assert!(
                op["responses"].get(status.to_string()).is_some(),
                "{method} {path} does not document {status}"
            );
        }
        assert!(op["responses"].get("500").is_none(), "{method} {path}");
    }
}

#[actix_web::test]
async fn served_document_is_the_committed_one() {
    let h = harness(ready_now());
    let (status, headers, body) = call(&h, TestRequest::get().uri("/openapi.json")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers.get("content-type").unwrap(), "application/json");
    let committed = std::fs::read(committed_path()).unwrap();
    assert!(
        body == committed,
        "GET /openapi.json differs from docs/openapi.json"
    );
}

/// `(path, method, operation)` of every operation of the document.
fn operations(v: &Value) -> Vec<(String, String, Value)> {
    let mut out = Vec::new();
    for (path, item) in v["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            out.push((path.clone(), method.to_uppercase(), op.clone()));
        }
    }
    out
}

/// The route table ([`crate::api::ROUTES`], which the router is built
/// from): a new route cannot be added without the document noticing. HEAD
/// and OPTIONS are answered for every path and are not operations of
/// their own.
fn route_table() -> BTreeSet<(String, String)> {
    crate::api::ROUTES
        .iter()
        .map(|e| (e.path.to_owned(), e.method.as_str().to_owned()))
        .collect()
}

#[test]
fn every_route_of_the_table_is_documented_and_nothing_else() {
    let v: Value = serde_json::from_str(document()).unwrap();
    let documented: BTreeSet<(String, String)> = operations(&v)
        .into_iter()
        .map(|(path, method, _)| (path, method))
        .collect();
    let table = route_table();
    let missing: Vec<_> = table.difference(&documented).collect();
    let extra: Vec<_> = documented.difference(&table).collect();
    assert!(
        missing.is_empty(),
        "routes without an operation: {missing:?}"
    );
    assert!(extra.is_empty(), "operations without a route: {extra:?}");
}

#[actix_web::test]
async fn every_documented_operation_is_routed() {
    let v: Value = serde_json::from_str(document()).unwrap();
    let h = harness(ready_now());
    for (path, method, _) in operations(&v) {
        let uri = path.replace("{name}", "alpha");
        let req = TestRequest::default()
            .method(method.parse().unwrap())
            .uri(&uri)
            .insert_header(("content-type", "application/json"))
            .set_payload("{}");
        let (status, _, body) = call(&h, req).await;
        let code = serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|v| v["error"]["code"].as_str().map(str::to_owned));
        assert!(
            !matches!(code.as_deref(), Some("not_found" | "method_not_allowed")),
            "{method} {uri}: {status} {code:?}"
        );
    }
}

#[actix_web::test]
async fn real_answers_decode_into_the_documented_shapes() {
    let h = harness(ready_now());
    let (_, _, body) = call(&h, TestRequest::get().uri("/v1/tools")).await;
    serde_json::from_value::<doc::ToolList>(json(&body)).unwrap();
    let (_, _, body) = call(&h, TestRequest::get().uri("/v1/servers")).await;
    serde_json::from_value::<doc::ServerList>(json(&body)).unwrap();
    let (_, _, body) = call(&h, TestRequest::get().uri("/v1/servers/alpha")).await;
    serde_json::from_value::<doc::ServerDetail>(json(&body)).unwrap();
    let (_, _, body) = call(
        &h,
        TestRequest::post()
            .uri("/v1/servers/alpha/refresh")
            .insert_header(("content-type", "application/json"))
            .peer_addr("127.0.0.1:40000".parse().unwrap()),
    )
    .await;
    serde_json::from_value::<doc::Accepted>(json(&body)).unwrap();
    let (_, _, body) = call(&h, TestRequest::get().uri("/healthz")).await;
    serde_json::from_value::<doc::Health>(json(&body)).unwrap();
    let (_, _, body) = call(&h, TestRequest::get().uri("/readyz")).await;
    serde_json::from_value::<doc::Ready>(json(&body)).unwrap();
    let (_, _, body) = call(&h, TestRequest::get().uri("/v1/servers/nope")).await;
    serde_json::from_value::<doc::ErrorBody>(json(&body)).unwrap();
    let reload = crate::reload::ReloadSummary {
        applied: true,
        added: vec!["a".into()],
        removed: vec![],
        changed: vec![],
        unchanged: 2,
    };
    serde_json::from_value::<doc::ReloadSummary>(serde_json::to_value(reload).unwrap()).unwrap();
}
