//! `gs://` against fake-gcs-server through the real `ferry-server` process: downloads, parallel ranged parts,
//! an object replaced mid-download, 404, checksum mismatch, and the identity object_store reports.
//!
//! fake-gcs-server checks no credential, so a refused credential (AccessDenied) cannot be shown on it.

use object_store::{GetOptions, GetRange, ObjectStoreExt};

use crate::support::emulated::{self, Emulator, BUCKET};
use crate::support::gcs::GcsServer;
use crate::support::model_bytes;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gs_uris_serve_every_model_as_scikit_learn_predicts() {
    emulated::serves_every_model(&GcsServer::start()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_gs_object_comes_in_ranged_parts_pinned_to_its_generation() {
    let seen = emulated::a_large_object_comes_in_ranged_parts(&GcsServer::start()).await;
    // Each part names the generation the HEAD returned.
    assert!(
        seen[1..].iter().all(|s| s.query.contains("generation=")),
        "{seen:?}"
    );
}

/// fake-gcs-server ignores If-Match on reads; the generation pin is what catches the change: the replaced
/// generation is gone (404), as on GCS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gs_object_replaced_mid_download_fails_instead_of_mixing_versions() {
    let ranged = emulated::an_object_replaced_mid_download_fails(&GcsServer::start()).await;
    assert_eq!(ranged.last().unwrap().status, 404, "{ranged:?}");
}

/// The resumed request names the first response's generation, which is gone (404).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gs_object_replaced_before_a_resume_fails_instead_of_mixing_versions() {
    let gets = emulated::an_object_replaced_before_a_resume_fails(&GcsServer::start()).await;
    assert_eq!(gets.last().unwrap().status, 404, "{gets:?}");
    assert!(
        gets.last().unwrap().query.contains("generation="),
        "{gets:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_gs_object_is_not_found() {
    emulated::a_missing_object_is_not_found(&GcsServer::start()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gs_object_with_another_digest_is_a_checksum_mismatch() {
    emulated::a_wrong_digest_is_a_checksum_mismatch(&GcsServer::start()).await;
}

/// GCS identity: the ETag is the content's MD5 (the same bytes uploaded again keep it), the generation changes with
/// every upload; the refresh feature must compare generations.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gs_upload_changes_the_generation_and_new_content_the_etag() {
    let [first, same_bytes, other] = emulated::identities(&GcsServer::start()).await;
    assert!(
        first.e_tag.is_some() && first.version.is_some(),
        "{first:?}"
    );
    assert_eq!(same_bytes.e_tag, first.e_tag);
    assert_ne!(same_bytes.version, first.version);
    assert_ne!(other.e_tag, first.e_tag);
    assert_ne!(other.version, same_bytes.version);
}

/// Evidence for the generation pin: after an overwrite, a read with the old ETag in If-Match is answered with the
/// new bytes, and a read of the old generation is NotFound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fake_gcs_server_ignores_if_match_but_honours_the_generation() {
    let gcs = GcsServer::start();
    gcs.create(BUCKET).await;
    let store = gcs.store(BUCKET);
    let path = object_store::path::Path::from("pinned.onnx");
    gcs.upload(BUCKET, path.as_ref(), model_bytes("logreg.onnx"))
        .await;
    let old = store.head(&path).await.unwrap();
    gcs.upload(BUCKET, path.as_ref(), model_bytes("mlp.onnx"))
        .await;
    let range = Some(GetRange::Bounded(0..100));
    let by_etag = store
        .get_opts(
            &path,
            GetOptions {
                if_match: old.e_tag.clone(),
                range: range.clone(),
                ..GetOptions::default()
            },
        )
        .await
        .expect("fake-gcs-server answers despite the stale If-Match");
    assert_ne!(by_etag.meta.e_tag, old.e_tag);
    let by_generation = store
        .get_opts(
            &path,
            GetOptions {
                version: old.version.clone(),
                range,
                ..GetOptions::default()
            },
        )
        .await
        .unwrap_err();
    assert!(
        matches!(by_generation, object_store::Error::NotFound { .. }),
        "{by_generation}"
    );
}

/// Any bearer token is accepted: fake-gcs-server has no notion of credentials.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fake_gcs_server_accepts_any_credential() {
    let gcs = GcsServer::start();
    gcs.create(BUCKET).await;
    gcs.put(BUCKET, "m.onnx", b"bytes").await;
    let response = crate::support::server::client()
        .get(format!("{}/{BUCKET}/m.onnx", gcs.endpoint))
        .bearer_auth("not-a-token")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}
