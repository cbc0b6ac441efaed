//! stdio upstreams: a crashing child is restarted with backoff, and
//! `list_changed` on stdout refreshes the catalog.

use std::path::Path;

use crate::helpers::{servers_yaml, spawn_app, FAST};

fn entry(args: &[&str]) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/stdio_server.py");
    let mut all = vec![format!("\"{}\"", script.display())];
    all.extend(args.iter().map(|a| format!("\"{a}\"")));
    format!("{{ command: python3, args: [{}] }}", all.join(", "))
}

#[actix_web::test]
async fn a_child_that_exits_is_degraded_with_its_status_then_restarted() {
    let dir = tempfile::tempdir().unwrap();
    let starts = dir.path().join("starts");
    let starts_arg = starts.display().to_string();
    let yaml = format!(
        "{}{}",
        FAST.replace(
            "backoff: { initial: 100ms, max: 1s }",
            "backoff: { initial: 400ms, max: 1s }"
        ),
        servers_yaml(&[(
            "crashy",
            entry(&["--tools", "2", "--starts", &starts_arg, "--exit-first-run"])
        )])
    );
    let app = spawn_app(&yaml).await;
    let s = app.wait_state("crashy", "degraded").await;
    let error = s["last_error"].as_str().unwrap();
    assert!(error.contains("exited") && error.contains('3'), "{error}");
    assert_eq!(s["stale"], true, "its last tools are kept, stale");

    let s = app.wait_healthy("crashy", 2).await;
    assert_eq!(s["stale"], false);
    let count = std::fs::read_to_string(&starts).unwrap().lines().count();
    assert_eq!(count, 2, "restarted exactly once");
    app.stop().await;
}

#[actix_web::test]
async fn list_changed_on_stdout_updates_the_catalog() {
    let dir = tempfile::tempdir().unwrap();
    let trigger = dir.path().join("change");
    let trigger_arg = trigger.display().to_string();
    let yaml = format!(
        "{FAST}{}",
        servers_yaml(&[(
            "notes",
            entry(&["--tools", "3", "--change-file", &trigger_arg])
        )])
    );
    let app = spawn_app(&yaml).await;
    app.wait_healthy("notes", 3).await;
    std::fs::write(&trigger, b"go").unwrap();
    // poll_interval is 10m: only the notification can bring the new tool.
    app.wait_tools("had the new tool", |b| {
        b["tools"]
            .as_array()
            .is_some_and(|t| t.iter().any(|t| t["name"] == "notes__tool_3"))
    })
    .await;
    app.stop().await;
}
