//! `az://` against Azurite through the real `ferry-server` process: downloads, parallel ranged parts, an object
//! replaced mid-download, 404, a wrong account key, checksum mismatch, and the identity object_store reports.

use object_store::{GetOptions, GetRange, ObjectStoreExt};

use crate::failures::fails_with;
use crate::support::azurite::Azurite;
use crate::support::emulated::{self, Emulator, BUCKET};
use crate::support::model_bytes;
use crate::support::server::ServerBuilder;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn az_uris_serve_every_model_as_scikit_learn_predicts() {
    emulated::serves_every_model(&Azurite::start()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_az_object_comes_in_ranged_parts() {
    emulated::a_large_object_comes_in_ranged_parts(&Azurite::start()).await;
}

/// Azurite honours If-Match: the parts after the overwrite are refused with 412.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_az_object_replaced_mid_download_fails_instead_of_mixing_versions() {
    let ranged = emulated::an_object_replaced_mid_download_fails(&Azurite::start()).await;
    assert_eq!(ranged.last().unwrap().status, 412, "{ranged:?}");
}

/// The resumed request's If-Match no longer holds (412).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_az_object_replaced_before_a_resume_fails_instead_of_mixing_versions() {
    let gets = emulated::an_object_replaced_before_a_resume_fails(&Azurite::start()).await;
    assert_eq!(gets.last().unwrap().status, 412, "{gets:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_az_object_is_not_found() {
    emulated::a_missing_object_is_not_found(&Azurite::start()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_az_object_with_another_digest_is_a_checksum_mismatch() {
    emulated::a_wrong_digest_is_a_checksum_mismatch(&Azurite::start()).await;
}

/// Azurite checks the Shared Key signature: another key is refused (403), never retried, and named AccessDenied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_account_key_is_access_denied() {
    let azurite = Azurite::start();
    azurite.create(BUCKET).await;
    let uri = azurite
        .put(BUCKET, "logreg.onnx", &model_bytes("logreg.onnx"))
        .await;
    // A well-formed key (64 bytes, base64) that is not the account's.
    let wrong = "A".repeat(86) + "==";
    let termination = fails_with(
        azurite.configure_with_key(ServerBuilder::new("m", &uri, "1"), &wrong),
        "AccessDenied",
    )
    .await;
    let message = termination["message"].as_str().unwrap();
    assert!(message.contains("logreg.onnx"), "{message}");
}

/// Azure identity: every upload gets a new ETag, even of the same bytes; Azurite gives no version id (blob
/// versioning is not emulated).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_az_upload_changes_the_etag() {
    let [first, same_bytes, other] = emulated::identities(&Azurite::start()).await;
    assert!(first.e_tag.is_some(), "{first:?}");
    assert_ne!(same_bytes.e_tag, first.e_tag);
    assert_ne!(other.e_tag, same_bytes.e_tag);
    assert_eq!(first.version, None);
}

/// Evidence that the ETag pin holds on Azurite: a read with a stale If-Match is a Precondition error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azurite_refuses_a_read_with_a_stale_if_match() {
    let azurite = Azurite::start();
    azurite.create(BUCKET).await;
    let store = azurite.store(BUCKET);
    let path = object_store::path::Path::from("pinned.onnx");
    azurite
        .upload(BUCKET, path.as_ref(), model_bytes("logreg.onnx"))
        .await;
    let old = store.head(&path).await.unwrap();
    azurite
        .upload(BUCKET, path.as_ref(), model_bytes("mlp.onnx"))
        .await;
    let error = store
        .get_opts(
            &path,
            GetOptions {
                if_match: old.e_tag,
                range: Some(GetRange::Bounded(0..100)),
                ..GetOptions::default()
            },
        )
        .await
        .unwrap_err();
    assert!(
        matches!(error, object_store::Error::Precondition { .. }),
        "{error}"
    );
}
