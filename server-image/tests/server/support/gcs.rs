//! fake-gcs-server, a GCS emulator in memory: buckets and objects are made through its JSON API, and ferry-server
//! reads them through the XML-style object URLs (`{base}/{bucket}/{object}`) that object_store uses, as on GCS.
//!
//! ferry-server reaches it with the standard variables object_store reads: `GOOGLE_SERVICE_ACCOUNT_KEY` (a key with
//! `disable_oauth`, so no token is fetched), `GOOGLE_BASE_URL` and `GOOGLE_ALLOW_HTTP`. fake-gcs-server checks no
//! credential at all.

use std::process::{Child, Command};

use futures::future::BoxFuture;

use super::emulated::Emulator;
use super::fake_gcs_server;
use super::server::ServerBuilder;

pub struct GcsServer {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    _dir: tempfile::TempDir,
    client: reqwest::Client,
}

/// A service-account key that makes object_store send no token (the emulator form its docs describe).
pub const EMULATOR_KEY: &str =
    r#"{"private_key": "", "private_key_id": "", "client_email": "", "disable_oauth": true}"#;

impl GcsServer {
    pub fn start() -> GcsServer {
        let binary = fake_gcs_server();
        let dir = tempfile::tempdir().expect("temporary directory");
        let (child, port) = super::spawn_on_free_port("fake-gcs-server", |port| {
            let mut command = Command::new(&binary);
            command
                .args(["-scheme", "http", "-host", "127.0.0.1"])
                .args(["-port", &port.to_string(), "-backend", "memory"])
                // Object URLs are routed by this host, as GCS routes storage.googleapis.com.
                .args(["-public-host", &format!("127.0.0.1:{port}")])
                .args(["-log-level", "error"])
                .current_dir(dir.path());
            command
        });
        GcsServer {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
            _dir: dir,
            client: super::server::client(),
        }
    }
}

impl Emulator for GcsServer {
    const SCHEME: &'static str = "gs";

    fn endpoint(&self) -> &str {
        &self.endpoint
    }

    fn create(&self, bucket: &str) -> BoxFuture<'static, ()> {
        let request = self
            .client
            .post(format!("{}/storage/v1/b", self.endpoint))
            .json(&serde_json::json!({ "name": bucket }));
        Box::pin(async move {
            let response = request.send().await.expect("create a bucket");
            assert!(response.status().is_success(), "{response:?}");
        })
    }

    /// A media upload through the JSON API (fake-gcs-server takes no XML-API PUT).
    fn upload(&self, bucket: &str, key: &str, bytes: Vec<u8>) -> BoxFuture<'static, ()> {
        let mut url = url::Url::parse(&format!("{}/upload/storage/v1/b/{bucket}/o", self.endpoint))
            .expect("upload URL");
        url.query_pairs_mut()
            .append_pair("uploadType", "media")
            .append_pair("name", key);
        let request = self.client.post(url).body(bytes);
        Box::pin(async move {
            let response = request.send().await.expect("upload an object");
            assert!(response.status().is_success(), "{response:?}");
        })
    }

    fn configure_at(&self, builder: ServerBuilder, endpoint: &str) -> ServerBuilder {
        builder
            .env("GOOGLE_SERVICE_ACCOUNT_KEY", EMULATOR_KEY)
            .env("GOOGLE_BASE_URL", endpoint)
            .env("GOOGLE_ALLOW_HTTP", "true")
    }

    fn store(&self, bucket: &str) -> Box<dyn object_store::ObjectStore> {
        use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
        use object_store::ClientConfigKey;
        let _ = rustls::crypto::ring::default_provider().install_default();
        let store = GoogleCloudStorageBuilder::new()
            .with_bucket_name(bucket)
            .with_service_account_key(EMULATOR_KEY)
            .with_config(GoogleConfigKey::BaseUrl, &self.endpoint)
            .with_config(GoogleConfigKey::Client(ClientConfigKey::AllowHttp), "true")
            .build()
            .expect("a GCS client for the emulator");
        Box::new(store)
    }
}

impl Drop for GcsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
