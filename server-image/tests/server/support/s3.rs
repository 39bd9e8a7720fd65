//! s3s-fs, a real S3-compatible server over a temporary directory: bucket `b`, object `k` is the file `root/b/k`.

use std::process::{Child, Command};

use super::s3s_fs;
use super::server::ServerBuilder;

pub const ACCESS_KEY: &str = "ferry-test-access";
pub const SECRET_KEY: &str = "ferry-test-secret";

pub struct S3Server {
    child: Child,
    pub endpoint: String,
    root: tempfile::TempDir,
}

impl S3Server {
    pub fn start() -> S3Server {
        let binary = s3s_fs();
        let root = tempfile::tempdir().expect("temporary directory");
        let (child, port) = super::spawn_on_free_port("s3s-fs", |port| {
            let mut command = Command::new(&binary);
            command
                .args(["--host", "127.0.0.1", "--port", &port.to_string()])
                .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
                .arg(root.path());
            command
        });
        S3Server {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
            root,
        }
    }

    pub fn put(&self, bucket: &str, key: &str, bytes: &[u8]) -> String {
        let path = self.root.path().join(bucket).join(key);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, bytes).unwrap();
        format!("s3://{bucket}/{key}")
    }

    /// Points a server at this store with the right credentials.
    pub fn configure(&self, builder: ServerBuilder) -> ServerBuilder {
        self.configure_with_secret(builder, SECRET_KEY)
    }

    pub fn configure_with_secret(&self, builder: ServerBuilder, secret: &str) -> ServerBuilder {
        builder
            .env("FERRY_S3_ENDPOINT", &self.endpoint)
            .env("FERRY_S3_ALLOW_HTTP", "true")
            .env("FERRY_S3_REGION", "us-east-1")
            .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", secret)
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
