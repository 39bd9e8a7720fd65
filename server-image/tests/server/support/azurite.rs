//! Azurite, Microsoft's Azure Blob emulator, in memory, with its well-known development account. It checks Shared
//! Key signatures, so a wrong account key is refused as on Azure.
//!
//! ferry-server reaches it with the standard variables object_store reads: `AZURE_STORAGE_USE_EMULATOR`,
//! `AZURITE_BLOB_STORAGE_URL`, `AZURE_STORAGE_ACCOUNT_NAME` and `AZURE_STORAGE_ACCOUNT_KEY`.

use std::process::{Child, Command};
use std::time::{SystemTime, UNIX_EPOCH};

use futures::future::BoxFuture;

use object_store::azure::MicrosoftAzureBuilder;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use sha2::{Digest, Sha256};

use super::azurite;
use super::emulated::Emulator;
use super::server::ServerBuilder;

/// Azurite's (and every Azure emulator's) published development account.
pub const ACCOUNT: &str = "devstoreaccount1";
pub const ACCOUNT_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

pub struct Azurite {
    child: Child,
    /// `http://127.0.0.1:PORT`; the account is the first path segment.
    pub endpoint: String,
    _dir: tempfile::TempDir,
}

impl Azurite {
    pub fn start() -> Azurite {
        let binary = azurite();
        let dir = tempfile::tempdir().expect("temporary directory");
        let (child, port) = super::spawn_on_free_port("azurite-blob", |port| {
            let mut command = Command::new(&binary);
            command
                .args(["--blobHost", "127.0.0.1", "--blobPort", &port.to_string()])
                // In memory (at most 256 MB of blobs), without its access log, and sending no telemetry.
                .args(["--inMemoryPersistence", "--extentMemoryLimit", "256"])
                .args(["--silent", "--disableTelemetry"])
                .current_dir(dir.path());
            command
        });
        Azurite {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
            _dir: dir,
        }
    }

    /// Points a server at this emulator with `key` as the account key (the right one is [`ACCOUNT_KEY`]).
    pub fn configure_with_key(&self, builder: ServerBuilder, key: &str) -> ServerBuilder {
        builder
            .env("AZURE_STORAGE_USE_EMULATOR", "true")
            .env("AZURITE_BLOB_STORAGE_URL", &self.endpoint)
            .env("AZURE_STORAGE_ACCOUNT_NAME", ACCOUNT)
            .env("AZURE_STORAGE_ACCOUNT_KEY", key)
    }
}

impl Emulator for Azurite {
    const SCHEME: &'static str = "az";

    fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Create Container, signed with Shared Key as the Azure SDKs sign it.
    fn create(&self, container: &str) -> BoxFuture<'static, ()> {
        let path = format!("/{ACCOUNT}/{container}");
        let date = http_date(SystemTime::now());
        let version = "2023-11-03";
        let string_to_sign = format!(
            "PUT\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:{date}\nx-ms-version:{version}\n/{ACCOUNT}{path}\nrestype:container"
        );
        let signature = base64_encode(&hmac_sha256(
            &base64_decode(ACCOUNT_KEY),
            string_to_sign.as_bytes(),
        ));
        let request = super::server::client()
            .put(format!("{}{path}?restype=container", self.endpoint))
            .header("x-ms-date", date)
            .header("x-ms-version", version)
            .header("authorization", format!("SharedKey {ACCOUNT}:{signature}"));
        Box::pin(async move {
            let response = request.send().await.expect("create a container");
            let status = response.status();
            let body = response.text().await.unwrap_or_default();
            assert!(
                status.is_success(),
                "create container {path}: {status} {body}"
            );
        })
    }

    /// Put Blob, through object_store's own client.
    fn upload(&self, container: &str, key: &str, bytes: Vec<u8>) -> BoxFuture<'static, ()> {
        let store = self.store(container);
        let path = object_store::path::Path::from(key);
        Box::pin(async move {
            store
                .put(&path, PutPayload::from(bytes))
                .await
                .expect("upload a blob");
        })
    }

    fn configure_at(&self, builder: ServerBuilder, endpoint: &str) -> ServerBuilder {
        self.configure_with_key(builder, ACCOUNT_KEY)
            .env("AZURITE_BLOB_STORAGE_URL", endpoint)
    }

    fn store(&self, container: &str) -> Box<dyn ObjectStore> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let store = MicrosoftAzureBuilder::new()
            .with_account(ACCOUNT)
            .with_access_key(ACCOUNT_KEY)
            .with_container_name(container)
            .with_endpoint(format!("{}/{ACCOUNT}", self.endpoint))
            .with_allow_http(true)
            .build()
            .expect("an Azure client for the emulator");
        Box::new(store)
    }
}

impl Drop for Azurite {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn hmac_sha256(key: &[u8], message: &[u8]) -> Vec<u8> {
    let mut block = [0u8; 64];
    if key.len() > 64 {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| block.iter().map(|b| b ^ byte).collect::<Vec<u8>>();
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(message)
        .finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .to_vec()
}

const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn base64_encode(bytes: &[u8]) -> String {
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(BASE64[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn base64_decode(text: &str) -> Vec<u8> {
    let sextets: Vec<u32> = text
        .bytes()
        .filter(|&c| c != b'=')
        .map(|c| BASE64.iter().position(|&b| b == c).expect("base64") as u32)
        .collect();
    let mut out = Vec::new();
    for chunk in sextets.chunks(4) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &s)| n | s << (18 - 6 * i));
        for i in 0..chunk.len() - 1 {
            out.push((n >> (16 - 8 * i)) as u8);
        }
    }
    out
}

/// RFC 1123, as `x-ms-date` wants it: `Wed, 02 Dec 2026 10:40:00 GMT`.
fn http_date(time: SystemTime) -> String {
    let seconds = time.duration_since(UNIX_EPOCH).unwrap().as_secs();
    let (days, rest) = ((seconds / 86_400) as i64, seconds % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let weekday = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"][days.rem_euclid(7) as usize];
    let months = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{weekday}, {day:02} {} {year} {:02}:{:02}:{:02} GMT",
        months[(month - 1) as usize],
        rest / 3600,
        rest / 60 % 60,
        rest % 60
    )
}

#[test]
fn shared_key_helpers_match_known_values() {
    assert_eq!(base64_encode(b"ferry"), "ZmVycnk=");
    assert_eq!(base64_encode(b"fe"), "ZmU=");
    assert_eq!(base64_decode("ZmVycnk="), b"ferry");
    assert_eq!(base64_encode(&base64_decode(ACCOUNT_KEY)), ACCOUNT_KEY);
    // RFC 4231, test case 2.
    assert_eq!(
        hex::encode(hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    );
    assert_eq!(
        http_date(UNIX_EPOCH + std::time::Duration::from_secs(1_796_207_402)),
        "Wed, 02 Dec 2026 10:30:02 GMT"
    );
}
