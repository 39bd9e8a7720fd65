//! Baselines for "fetch + SHA-256", with the same object_store client ferry-server downloads with:
//!
//! - `raw`: read the object and discard it;
//! - `sha256`: read it and hash it on a second thread (as ferry-server does), still without keeping the bytes.
//!
//! ferry-server's own fetch additionally writes the file into the work directory. Used by benches/run.sh; prints
//! the seconds taken.
//!
//! cargo bench -p ferry-server --bench raw_transfer -- (raw|sha256) URI   (S3 settings: FERRY_S3_*, AWS_*)

use std::time::{Duration, Instant};

use bytes::Bytes;
use ferry_server::fetch::Fetcher;
use ferry_server::model::StoreSettings;
use futures::StreamExt;
use sha2::{Digest, Sha256};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mode = args.iter().find(|a| *a == "raw" || *a == "sha256");
    let uri = args.iter().find(|a| a.contains("://"));
    let (Some(mode), Some(uri)) = (mode, uri) else {
        eprintln!("usage: cargo bench -p ferry-server --bench raw_transfer -- (raw|sha256) URI");
        std::process::exit(2);
    };
    let uri = url::Url::parse(uri).expect("a URI");
    let _ = rustls::crypto::ring::default_provider().install_default();
    let fetcher = Fetcher {
        store: StoreSettings {
            s3_endpoint: std::env::var("FERRY_S3_ENDPOINT").ok(),
            s3_region: std::env::var("FERRY_S3_REGION").ok(),
            s3_allow_http: std::env::var("FERRY_S3_ALLOW_HTTP").is_ok_and(|v| v == "true"),
        },
        work_dir: std::env::temp_dir(),
        max_bytes: u64::MAX,
        timeout: Duration::from_secs(600),
        concurrency: 1,
        part_bytes: ferry_server::contract::DEFAULT_DOWNLOAD_PART_BYTES,
    };
    let hash = mode == "sha256";
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    runtime.block_on(async {
        let (store, path) = fetcher.open(&uri).expect("store");
        let started = Instant::now();
        let (batches, received) = std::sync::mpsc::sync_channel::<Vec<Bytes>>(16);
        let hasher = std::thread::spawn(move || {
            let mut sha256 = Sha256::new();
            for batch in received {
                batch.iter().for_each(|chunk| sha256.update(chunk));
            }
            hex::encode(sha256.finalize())
        });
        let mut body = store
            .get_opts(&path, Default::default())
            .await
            .expect("GET")
            .into_stream();
        let (mut batch, mut batch_bytes, mut total) = (Vec::new(), 0, 0);
        while let Some(chunk) = body.next().await {
            let chunk = chunk.expect("body");
            total += chunk.len();
            if hash {
                batch_bytes += chunk.len();
                batch.push(chunk);
                if batch_bytes >= 1 << 20 {
                    batches.send(std::mem::take(&mut batch)).expect("hasher");
                    batch_bytes = 0;
                }
            }
        }
        batches.send(batch).expect("hasher");
        drop(batches);
        let digest = hasher.join().expect("hasher");
        println!("{:.6}", started.elapsed().as_secs_f64());
        eprintln!(
            "{total} bytes, sha256 {}",
            if hash {
                digest.as_str()
            } else {
                "not computed"
            }
        );
    });
}
