//! Runs the real `ferry-server` binary on loopback with ephemeral ports, a private work directory and a private
//! termination-message file, and talks to it over HTTP.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::Value;

use super::onnxruntime_library;

const BINARY: &str = env!("CARGO_BIN_EXE_ferry-server");

pub struct ServerBuilder {
    envs: Vec<(String, String)>,
    args: Vec<String>,
    dir: tempfile::TempDir,
    admin_token: Option<String>,
}

pub struct Server {
    child: Child,
    pub inference: String,
    pub admin: String,
    /// `http://ADDRESS` of the gRPC port.
    pub grpc: String,
    log: Arc<Mutex<String>>,
    dir: tempfile::TempDir,
    pub client: reqwest::Client,
    /// The credential `admin_post` presents, as the operator would.
    pub admin_token: Option<String>,
}

/// A process that exited before (or without) serving.
pub struct Exited {
    pub status: ExitStatus,
    pub log: String,
    pub termination: Option<Value>,
}

impl ServerBuilder {
    /// A server for `uri` served as `name`, version `version`, with every setting the tests do not vary pinned.
    pub fn new(name: &str, uri: &str, version: &str) -> ServerBuilder {
        let dir = tempfile::tempdir().expect("temporary directory");
        let termination = dir.path().join("termination-log");
        let work = dir.path().join("work");
        let library = onnxruntime_library();
        // Like a pod the operator made: a credential file of its own, which admin calls present.
        let token_file = dir.path().join("admin-token");
        let admin_token = format!("test{}.{}", std::process::id(), random_hex(32));
        std::fs::write(&token_file, format!("{admin_token}\n")).expect("write the admin token");
        let builder = ServerBuilder {
            envs: Vec::new(),
            args: Vec::new(),
            dir,
            admin_token: Some(admin_token),
        };
        builder
            .env("FERRY_ADMIN_TOKEN_FILE", token_file.to_str().unwrap())
            .env("FERRY_MODEL_NAME", name)
            .env("FERRY_MODEL_URI", uri)
            .env("FERRY_MODEL_VERSION", version)
            .env("FERRY_LISTEN_ADDRESS", "127.0.0.1")
            .env("FERRY_HTTP_PORT", "0")
            .env("FERRY_ADMIN_PORT", "0")
            .env("FERRY_GRPC_PORT", "0")
            .env("FERRY_WORK_DIR", work.to_str().unwrap())
            .env(
                "FERRY_TERMINATION_MESSAGE_PATH",
                termination.to_str().unwrap(),
            )
            .env("FERRY_ONNXRUNTIME_LIBRARY", library.to_str().unwrap())
            .env("FERRY_DOWNLOAD_TIMEOUT_SECONDS", "60")
            .env("FERRY_SHUTDOWN_TIMEOUT_SECONDS", "10")
            .env("FERRY_LOG", "info")
    }

    pub fn env(mut self, key: &str, value: &str) -> ServerBuilder {
        self.envs.retain(|(k, _)| k != key);
        self.envs.push((key.to_owned(), value.to_owned()));
        self
    }

    pub fn without(mut self, key: &str) -> ServerBuilder {
        self.envs.retain(|(k, _)| k != key);
        if key == "FERRY_ADMIN_TOKEN_FILE" {
            self.admin_token = None;
        }
        self
    }

    /// The credential the server's token file holds.
    pub fn admin_token(&self) -> Option<&str> {
        self.admin_token.as_deref()
    }

    pub fn admin_token_path(&self) -> PathBuf {
        self.dir.path().join("admin-token")
    }

    pub fn arg(mut self, arg: &str) -> ServerBuilder {
        self.args.push(arg.to_owned());
        self
    }

    pub fn sha256(self, digest: &str) -> ServerBuilder {
        self.env("FERRY_MODEL_SHA256", digest)
    }

    pub fn termination_path(&self) -> PathBuf {
        self.dir.path().join("termination-log")
    }

    fn spawn(&self) -> (Child, Arc<Mutex<String>>, mpsc::Receiver<Addresses>) {
        let mut command = Command::new(BINARY);
        for (key, _) in std::env::vars() {
            if ["FERRY_", "AWS_", "GOOGLE_", "AZURE_", "AZURITE_"]
                .iter()
                .any(|prefix| key.starts_with(prefix))
            {
                command.env_remove(key);
            }
        }
        command
            .envs(self.envs.iter().map(|(k, v)| (k, v)))
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("ferry-server starts");
        let log = Arc::new(Mutex::new(String::new()));
        let (addresses, received) = mpsc::channel();
        for stream in [
            Box::new(child.stderr.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stdout.take().unwrap()),
        ] {
            let log = log.clone();
            let addresses = addresses.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if let Some(found) = listening_addresses(&line) {
                        let _ = addresses.send(found);
                    }
                    let mut log = log.lock().unwrap();
                    log.push_str(&line);
                    log.push('\n');
                }
            });
        }
        (child, log, received)
    }

    /// Starts the server and waits until both ports listen.
    pub fn start(self) -> Server {
        let (mut child, log, addresses) = self.spawn();
        match addresses.recv_timeout(Duration::from_secs(20)) {
            Ok(Addresses {
                inference,
                admin,
                grpc,
            }) => Server {
                child,
                inference: format!("http://{inference}"),
                admin: format!("http://{admin}"),
                grpc: format!("http://{grpc}"),
                log,
                dir: self.dir,
                client: client(),
                admin_token: self.admin_token,
            },
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "ferry-server did not start listening:\n{}",
                    log.lock().unwrap()
                );
            }
        }
    }

    /// Runs a server expected to exit on its own (bad configuration, failed model) and collects the outcome.
    pub fn run_to_exit(self, timeout: Duration) -> Exited {
        let termination = self.termination_path();
        let (mut child, log, _addresses) = self.spawn();
        let status = wait_child(&mut child, timeout).unwrap_or_else(|| {
            let _ = child.kill();
            panic!(
                "ferry-server did not exit within {timeout:?}:\n{}",
                log.lock().unwrap()
            )
        });
        // Let the reader threads drain the pipes.
        std::thread::sleep(Duration::from_millis(50));
        let log = log.lock().unwrap().clone();
        Exited {
            status,
            log,
            termination: read_termination(&termination),
        }
    }
}

/// The tests' HTTP client. reqwest shares the server's TLS setup (rustls without a bundled provider), so the ring
/// provider is installed first, as the server does.
pub fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("HTTP client")
}

/// The addresses the server logs once it listens.
struct Addresses {
    inference: String,
    admin: String,
    grpc: String,
}

fn listening_addresses(line: &str) -> Option<Addresses> {
    if !line.contains("listening") {
        return None;
    }
    let field = |name: &str| {
        line.split_whitespace()
            .find_map(|word| word.strip_prefix(name))
            .map(str::to_owned)
    };
    Some(Addresses {
        inference: field("inference=")?,
        admin: field("admin=")?,
        grpc: field("grpc=")?,
    })
}

fn wait_child(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("child status") {
            return Some(status);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn read_termination(path: &std::path::Path) -> Option<Value> {
    let text = std::fs::read_to_string(path).ok()?;
    assert_eq!(
        text.lines().count(),
        1,
        "the termination message is one line: {text:?}"
    );
    Some(
        serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("termination message {text:?} is not JSON: {e}")),
    )
}

impl Server {
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    pub fn termination(&self) -> Option<Value> {
        read_termination(&self.dir.path().join("termination-log"))
    }

    pub fn work_dir(&self) -> PathBuf {
        self.dir.path().join("work")
    }

    /// The process id of the server.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The exit status, if the process has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("child status")
    }

    /// Sends SIGTERM, as the kubelet does.
    pub fn sigterm(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -TERM failed");
    }

    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let status = wait_child(&mut self.child, timeout).unwrap_or_else(|| {
            panic!(
                "ferry-server did not exit within {timeout:?}:\n{}",
                self.log()
            )
        });
        std::thread::sleep(Duration::from_millis(50));
        status
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> (StatusCode, Value) {
        let response = request.send().await.expect("request reaches ferry-server");
        let status = response.status();
        let text = response.text().await.expect("response body");
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, body)
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.send(self.client.get(format!("{}{path}", self.inference)))
            .await
    }

    pub async fn post(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        self.send(
            self.client
                .post(format!("{}{path}", self.inference))
                .json(body),
        )
        .await
    }

    pub async fn admin_get(&self, path: &str) -> (StatusCode, Value) {
        self.send(self.client.get(format!("{}{path}", self.admin)))
            .await
    }

    /// A POST to the admin port with the server's own credential, as the operator sends it.
    pub async fn admin_post(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        self.admin_post_as(self.admin_token.as_deref(), path, body)
            .await
    }

    /// A POST to the admin port presenting `token` as the bearer credential (none when `None`).
    pub async fn admin_post_as(
        &self,
        token: Option<&str>,
        path: &str,
        body: &Value,
    ) -> (StatusCode, Value) {
        let mut request = self.client.post(format!("{}{path}", self.admin)).json(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        self.send(request).await
    }

    /// The Prometheus text of the admin port.
    pub async fn metrics(&self) -> String {
        self.client
            .get(format!("{}/metrics", self.admin))
            .send()
            .await
            .expect("metrics answer")
            .text()
            .await
            .expect("metrics body")
    }

    pub async fn status(&self) -> Value {
        let (code, body) = self.admin_get("/status").await;
        assert_eq!(code, StatusCode::OK, "{body}");
        body
    }

    /// Waits for readiness; panics with the log if the server exits or the time runs out.
    pub async fn wait_ready(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("child status") {
                panic!(
                    "ferry-server exited ({status}) before it was ready:\n{}",
                    self.log()
                );
            }
            if let Ok(response) = self
                .client
                .get(format!("{}/v2/health/ready", self.admin))
                .send()
                .await
            {
                if response.status() == StatusCode::OK {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "not ready within {timeout:?}:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until the status satisfies `done`, returning it.
    pub async fn wait_status(&self, timeout: Duration, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let status = self.status().await;
            if done(&status) {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "status never got there within {timeout:?}: {status}\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            eprintln!("--- ferry-server log ---\n{}", self.log());
        }
    }
}

/// `bytes` random bytes as hex, from the kernel's generator.
pub fn random_hex(bytes: usize) -> String {
    use std::io::Read;
    let mut buffer = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buffer))
        .expect("read /dev/urandom");
    buffer.iter().map(|b| format!("{b:02x}")).collect()
}

impl Server {
    /// A gRPC client of the server's `inference.GRPCInferenceService`.
    pub async fn grpc_client(&self) -> GrpcClient {
        let channel = tonic::transport::Channel::from_shared(self.grpc.clone())
            .expect("gRPC address")
            .connect()
            .await
            .unwrap_or_else(|e| panic!("gRPC port {}: {e}", self.grpc));
        GrpcClient::new(channel)
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX)
    }
}

pub type GrpcClient =
    ferry_server::grpc::proto::grpc_inference_service_client::GrpcInferenceServiceClient<
        tonic::transport::Channel,
    >;

/// Starts a server for a committed model file served as `name`, `version`, and waits until it is ready.
pub async fn serve_model(file: &str, name: &str, version: &str) -> Server {
    ready_server(ServerBuilder::new(
        name,
        &super::file_uri(&super::model_path(file)),
        version,
    ))
    .await
}

/// Starts a server for `uri` and waits until it is ready.
pub async fn ready_server(builder: ServerBuilder) -> Server {
    let mut server = builder.start();
    server.wait_ready(Duration::from_secs(30)).await;
    server
}
