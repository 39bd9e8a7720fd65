//! The admin API obeys only the holder of the credential: every mutating call without it is refused with 401 and
//! changes nothing, read-only calls stay open, and the credential never reaches the log or the status.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::support::server::{random_hex, ready_server, Server, ServerBuilder};
use crate::support::{expectation, file_uri, model_path};

fn logreg() -> String {
    file_uri(&model_path("logreg.onnx"))
}

/// A body each mutating route accepts, that would replace version 1 with mlp.onnx as version 2.
fn replacing_call(route: &str) -> (String, Value) {
    let path = route.replace("{name}", "iris");
    let body = json!({"parameters": {
        "uri": file_uri(&model_path("mlp.onnx")), "version": "2", "wait": true
    }});
    (path, body)
}

/// The server still serves version 1 with logreg's answers.
async fn still_serves_version_1(server: &Server) {
    let logreg = expectation("logreg");
    let (code, body) = server
        .post("/v2/models/iris/infer", &logreg.request(&[0, 1], "r"))
        .await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_eq!(body["model_version"], "1", "{body}");
    logreg.matches(&[0, 1], &body).unwrap();
    assert_eq!(server.status().await["version"], "1");
}

fn refused_count(metrics: &str, reason: &str) -> u64 {
    let prefix = format!("ferry_admin_refused_total{{reason=\"{reason}\"}} ");
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .map_or(0, |n| n.trim().parse().unwrap())
}

fn assert_refused(code: StatusCode, body: &Value) {
    assert_eq!(code, StatusCode::UNAUTHORIZED, "{body}");
    assert!(body["error"].is_string(), "{body}");
    assert_eq!(body["code"], "Unauthorized", "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_mutating_call_needs_the_credential_and_a_refused_one_changes_nothing() {
    let builder = ServerBuilder::new("iris", &logreg(), "1");
    let token = builder.admin_token().unwrap().to_owned();
    let (id, _) = token.split_once('.').unwrap();
    let id = id.to_owned();
    let server = ready_server(builder).await;
    let wrong = [
        format!("{token}x"),
        token[..token.len() - 1].to_owned(),
        format!("{id}.{}", random_hex(32)),
    ];
    for route in ferry_server::contract::paths::MUTATING {
        let (path, body) = replacing_call(route);
        let (code, answer) = server.admin_post_as(None, &path, &body).await;
        assert_refused(code, &answer);
        assert!(
            answer["error"].as_str().unwrap().contains("Authorization"),
            "{answer}"
        );
        for credential in &wrong {
            let (code, answer) = server.admin_post_as(Some(credential), &path, &body).await;
            assert_refused(code, &answer);
        }
        // Not a bearer credential at all.
        let response = server
            .client
            .post(format!("{}{path}", server.admin))
            .basic_auth("admin", Some(&token))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            response.headers()["www-authenticate"],
            "Bearer realm=\"ferry-server admin\""
        );
        still_serves_version_1(&server).await;
    }
    let text = server.metrics().await;
    let routes = ferry_server::contract::paths::MUTATING.len() as u64;
    assert_eq!(refused_count(&text, "missing"), 2 * routes, "{text}");
    assert_eq!(refused_count(&text, "wrong"), 3 * routes, "{text}");

    // Read-only endpoints need nothing.
    for path in ["/status", "/metrics", "/v2/health/live", "/v2/health/ready"] {
        let (code, body) = server.admin_get(path).await;
        assert_eq!(code, StatusCode::OK, "{path}: {body}");
    }
    let (code, index) = server
        .admin_post_as(None, "/v2/repository/index", &json!({}))
        .await;
    assert_eq!(code, StatusCode::OK, "{index}");
    let status = server.status().await;
    assert_eq!(
        status["admin"],
        json!({"mode": "token", "credential_id": id})
    );

    // The holder of the credential is obeyed.
    let (path, body) = replacing_call(ferry_server::contract::paths::REPOSITORY_LOAD);
    let (code, answer) = server.admin_post(&path, &body).await;
    assert_eq!(code, StatusCode::OK, "{answer}");
    assert_eq!(answer["version"], "2");
    let mlp = expectation("mlp");
    let (_, inferred) = server
        .post("/v2/models/iris/infer", &mlp.request(&[0], "r"))
        .await;
    assert_eq!(inferred["model_version"], "2", "{inferred}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_credential_takes_effect_without_a_restart() {
    let builder = ServerBuilder::new("iris", &logreg(), "1");
    let old = builder.admin_token().unwrap().to_owned();
    let file = builder.admin_token_path();
    let server = ready_server(builder).await;
    // The kubelet swaps a Secret volume's files in place; the server reads the file on each call.
    let new = format!("rotated.{}", random_hex(32));
    std::fs::write(&file, &new).unwrap();
    let (path, body) = replacing_call(ferry_server::contract::paths::REPOSITORY_LOAD);
    let (code, answer) = server.admin_post_as(Some(&old), &path, &body).await;
    assert_refused(code, &answer);
    still_serves_version_1(&server).await;
    assert_eq!(server.status().await["admin"]["credential_id"], "rotated");
    let (code, answer) = server.admin_post_as(Some(&new), &path, &body).await;
    assert_eq!(code, StatusCode::OK, "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_without_a_credential_refuses_changes_unless_started_insecure_open() {
    let server =
        ready_server(ServerBuilder::new("iris", &logreg(), "1").without("FERRY_ADMIN_TOKEN_FILE"))
            .await;
    let (path, body) = replacing_call(ferry_server::contract::paths::REPOSITORY_LOAD);
    for token in [None, Some("anything.at-all")] {
        let (code, answer) = server.admin_post_as(token, &path, &body).await;
        assert_refused(code, &answer);
        let message = answer["error"].as_str().unwrap();
        assert!(
            message.contains("FERRY_ADMIN_TOKEN_FILE")
                && message.contains("FERRY_INSECURE_OPEN_ADMIN"),
            "{message}"
        );
    }
    still_serves_version_1(&server).await;
    assert_eq!(refused_count(&server.metrics().await, "unconfigured"), 2);
    assert_eq!(server.status().await["admin"], json!({"mode": "refuse"}));

    let open = ready_server(
        ServerBuilder::new("iris", &logreg(), "1")
            .without("FERRY_ADMIN_TOKEN_FILE")
            .env("FERRY_INSECURE_OPEN_ADMIN", "true"),
    )
    .await;
    assert!(
        open.log().contains("FERRY_INSECURE_OPEN_ADMIN=true"),
        "{}",
        open.log()
    );
    assert_eq!(
        open.status().await["admin"],
        json!({"mode": "insecure-open"})
    );
    let (code, answer) = open.admin_post_as(None, &path, &body).await;
    assert_eq!(code, StatusCode::OK, "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_credential_never_reaches_the_log_or_the_status_even_at_trace_level() {
    let builder = ServerBuilder::new("iris", &logreg(), "1").env("FERRY_LOG", "trace");
    let token = builder.admin_token().unwrap().to_owned();
    let (_, secret) = token.split_once('.').unwrap();
    let secret = secret.to_owned();
    let server = ready_server(builder).await;
    let wrong = format!("guess.{}", random_hex(32));
    let (path, body) = replacing_call(ferry_server::contract::paths::REPOSITORY_LOAD);
    let (code, _) = server.admin_post_as(Some(&wrong), &path, &body).await;
    assert_eq!(code, StatusCode::UNAUTHORIZED);
    let (code, answer) = server.admin_post(&path, &body).await;
    assert_eq!(code, StatusCode::OK, "{answer}");
    let status = server.status().await.to_string();
    let log = server.log();
    assert!(log.contains("refused an admin call"), "{log}");
    for leaked in [secret.as_str(), &wrong[6..]] {
        assert!(!log.contains(leaked), "a credential is in the log:\n{log}");
        assert!(
            !status.contains(leaked),
            "a credential is in the status: {status}"
        );
    }
}

#[test]
fn a_token_file_that_is_missing_or_empty_is_a_configuration_error() {
    for content in [None, Some("  \n")] {
        let builder = ServerBuilder::new("iris", &logreg(), "1");
        let path = builder.admin_token_path();
        match content {
            Some(text) => std::fs::write(&path, text).unwrap(),
            None => std::fs::remove_file(&path).unwrap(),
        }
        let exited = builder.run_to_exit(std::time::Duration::from_secs(10));
        assert_eq!(exited.status.code(), Some(2), "{}", exited.log);
        let termination = exited.termination.expect("termination message");
        assert_eq!(termination["reason"], "InvalidConfig");
        assert_eq!(
            termination["setting"], "FERRY_ADMIN_TOKEN_FILE",
            "{termination}"
        );
    }
}
