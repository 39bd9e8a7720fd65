//! Every scheme loads, and every model predicts exactly what scikit-learn predicts on the same rows.

use axum::body::Bytes;

use crate::support::http_store::{Behavior, HttpStore};
use crate::support::s3::S3Server;
use crate::support::server::{ready_server, ServerBuilder};
use crate::support::{expectations, file_uri, model_bytes, model_path, sha256_hex, Expected};

/// All rows in one batch, then each row on its own.
pub(crate) async fn assert_predictions(builder: ServerBuilder, expected: &Expected) {
    let server = ready_server(builder).await;
    let all: Vec<usize> = (0..expected.rows.len()).collect();
    let (status, body) = server
        .post("/v2/models/model/infer", &expected.request(&all, "batch"))
        .await;
    assert_eq!(status, 200, "{}: {body}", expected.name);
    assert_eq!(body["id"], "batch");
    assert_eq!(body["model_name"], "model");
    expected
        .matches(&all, &body)
        .unwrap_or_else(|e| panic!("{e}"));
    for row in 0..expected.rows.len() {
        let (status, body) = server
            .post("/v2/models/model/infer", &expected.request(&[row], "one"))
            .await;
        assert_eq!(status, 200, "{}: {body}", expected.name);
        expected
            .matches(&[row], &body)
            .unwrap_or_else(|e| panic!("{e}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_uris_serve_every_model_as_scikit_learn_predicts() {
    for expected in expectations() {
        let uri = file_uri(&model_path(&expected.file));
        assert_predictions(ServerBuilder::new("model", &uri, "1"), &expected).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_uris_serve_every_model_as_scikit_learn_predicts() {
    let s3 = S3Server::start();
    for expected in expectations() {
        let bytes = model_bytes(&expected.file);
        let uri = s3.put("models", &format!("sklearn/{}", expected.file), &bytes);
        // 4 KiB parts: the forests and boosted trees (12-33 KiB) come as 3-9 parallel range requests, the
        // logistic regression and the MLP in one.
        let builder = s3
            .configure(ServerBuilder::new("model", &uri, "1"))
            .env("FERRY_DOWNLOAD_PART_BYTES", "4096")
            .env("FERRY_DOWNLOAD_CONCURRENCY", "4")
            .sha256(&sha256_hex(&bytes));
        assert_predictions(builder, &expected).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_uris_serve_every_model_as_scikit_learn_predicts() {
    let all = expectations();
    let paths: Vec<String> = all.iter().map(|e| format!("/files/{}", e.file)).collect();
    let store = HttpStore::start(
        all.iter()
            .zip(&paths)
            .map(|(e, path)| {
                (
                    path.as_str(),
                    Behavior::Serve(Bytes::from(model_bytes(&e.file))),
                )
            })
            .collect(),
    )
    .await;
    for (expected, path) in all.iter().zip(&paths) {
        let builder = ServerBuilder::new("model", &store.uri(path), "1")
            .sha256(&sha256_hex(&model_bytes(&expected.file)));
        assert_predictions(builder, expected).await;
    }
}
