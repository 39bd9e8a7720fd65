//! Running the controller for a test: in this process (`ferry::controller::run` on a tokio task), or as the
//! `ferry run` process Cargo built for the test target. Either runs with any identity: the administrator's by
//! default, a chart ServiceAccount's (see [`ControlPlane::service_account_kubeconfig`]), or a client with extra
//! layers (a request counter).
//!
//! [`ControlPlane::service_account_kubeconfig`]: super::ControlPlane::service_account_kubeconfig

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferry::config::OperatorConfig;
use ferry::controller::{self, RunOptions};
use ferry::metrics::Metrics;
use kube::Client;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::{admin_key_file, control_plane, test_runtime_selector};

/// How an in-process controller runs; [`InProcess::watching`] starts one.
pub struct Spawn {
    namespaces: Vec<String>,
    client: Option<Client>,
    concurrency: u16,
    config: OperatorConfig,
    metrics: Arc<Metrics>,
    runtime_selector: Option<String>,
}

impl Spawn {
    /// The client it talks to the API server with (default: the control plane's administrator).
    pub fn client(mut self, client: Client) -> Self {
        self.client = Some(client);
        self
    }

    /// ModelDeployments reconciled at the same time (default 4).
    pub fn concurrency(mut self, concurrency: u16) -> Self {
        self.concurrency = concurrency;
        self
    }

    /// Its configuration (default: `OperatorConfig::default()`, with a random admin key). Keep it across a
    /// restart for the same admin key.
    pub fn config(mut self, config: OperatorConfig) -> Self {
        self.config = config;
        self
    }

    /// Where it counts (default: new metrics). Share them across a restart to keep counting.
    pub fn metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// The ModelRuntimes it chooses from (default: those of its test, [`test_runtime_selector`]); None: all.
    pub fn runtime_selector(mut self, selector: Option<String>) -> Self {
        self.runtime_selector = selector;
        self
    }

    pub async fn start(self) -> InProcess {
        let client = match self.client {
            Some(client) => client,
            None => control_plane().client().await,
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let options = RunOptions {
            namespaces: self.namespaces,
            concurrency: self.concurrency,
            runtime_selector: self.runtime_selector,
        };
        let shutdown = async move {
            let _ = stopped.await;
        };
        let handle = tokio::spawn(controller::run(
            client,
            self.config,
            options,
            self.metrics.clone(),
            shutdown,
        ));
        InProcess {
            metrics: self.metrics,
            stop,
            handle,
        }
    }
}

/// A controller running on a task of this process.
pub struct InProcess {
    pub metrics: Arc<Metrics>,
    stop: oneshot::Sender<()>,
    handle: JoinHandle<anyhow::Result<()>>,
}

impl InProcess {
    /// A controller of the namespaces listed (all of them if none), to be configured and started.
    pub fn watching(namespaces: &[&str]) -> Spawn {
        Spawn {
            namespaces: namespaces.iter().map(|ns| (*ns).to_owned()).collect(),
            client: None,
            concurrency: 4,
            config: OperatorConfig::default(),
            metrics: Arc::new(Metrics::default()),
            runtime_selector: Some(test_runtime_selector(namespaces)),
        }
    }

    /// Stops it the way SIGTERM stops `ferry run`: in-flight reconciles finish. Fails with the controller's own
    /// error if it stopped on one, or if it does not stop within 15 s.
    pub async fn stop(self) -> Result<(), String> {
        let _ = self.stop.send(());
        match tokio::time::timeout(Duration::from_secs(15), self.handle).await {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(error))) => Err(format!("the controller failed: {error:#}")),
            Ok(Err(join)) => Err(format!("the controller panicked: {join}")),
            Err(_) => Err("the controller did not stop within 15 s".into()),
        }
    }

    /// Stops it at once, wherever it is, as a crash would.
    pub async fn kill(self) {
        self.handle.abort();
        let _ = self.handle.await;
    }
}

/// How a `ferry run` process runs; [`FerryRun::watching`] starts one.
pub struct FerryRunOptions {
    /// None: the shared control plane's administrator (started only then).
    kubeconfig: Option<PathBuf>,
    env: BTreeMap<String, String>,
    only_given_env: bool,
    log: Option<PathBuf>,
}

impl FerryRunOptions {
    /// The kubeconfig it authenticates with (default: the control plane's administrator).
    pub fn kubeconfig(mut self, path: &Path) -> Self {
        self.kubeconfig = Some(path.to_owned());
        self
    }

    /// A setting (`ferry run` reads every flag from a `FERRY_*` variable too).
    pub fn env(mut self, name: &str, value: impl Into<String>) -> Self {
        self.env.insert(name.to_owned(), value.into());
        self
    }

    /// Only the variables given here (and PATH, KUBECONFIG and the metrics address), as in a pod; not this
    /// process's environment nor the defaults (the test admin key).
    pub fn only(mut self, env: &BTreeMap<String, String>) -> Self {
        self.env = env.clone();
        self.only_given_env = true;
        self
    }

    /// Keep its output in `path` after it ends (default: a temporary file removed when it is dropped).
    pub fn log_to(mut self, path: &Path) -> Self {
        self.log = Some(path.to_owned());
        self
    }

    pub fn start(self) -> FerryRun {
        static STARTED: AtomicU32 = AtomicU32::new(0);
        let metrics_port = free_port();
        let (log, keep_log) = match self.log {
            Some(path) => (path, true),
            None => {
                let n = STARTED.fetch_add(1, Ordering::Relaxed);
                let name = format!("ferry-run-{}-{n}.log", std::process::id());
                (std::env::temp_dir().join(name), false)
            }
        };
        let file = std::fs::File::create(&log).expect("create the log of ferry run");
        // FERRY_RUN_WRAPPER runs it under a tool (a heap profiler: `heaptrack -o /tmp/ferry-heap`).
        let mut command = match std::env::var("FERRY_RUN_WRAPPER")
            .ok()
            .filter(|w| !w.trim().is_empty())
        {
            Some(wrapper) => {
                let mut words = wrapper.split_whitespace();
                let mut command = Command::new(words.next().expect("a wrapper command"));
                command.args(words).arg(env!("CARGO_BIN_EXE_ferry"));
                command
            }
            None => Command::new(env!("CARGO_BIN_EXE_ferry")),
        };
        if self.only_given_env {
            command
                .env_clear()
                .env("PATH", std::env::var_os("PATH").unwrap_or_default());
        }
        let child = command
            .arg("run")
            .envs(&self.env)
            .env(
                "KUBECONFIG",
                self.kubeconfig
                    .unwrap_or_else(|| control_plane().kubeconfig.clone()),
            )
            .env("FERRY_METRICS_ADDRESS", format!("127.0.0.1:{metrics_port}"))
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log file"))
            .stderr(file)
            .spawn()
            .expect("ferry run starts");
        FerryRun {
            child: Mutex::new(child),
            metrics_port,
            log,
            keep_log,
        }
    }
}

/// `ferry run` as its own process, killed when dropped.
pub struct FerryRun {
    child: Mutex<Child>,
    /// Port of its metrics and health endpoints on 127.0.0.1.
    pub metrics_port: u16,
    log: PathBuf,
    keep_log: bool,
}

impl FerryRun {
    /// A `ferry run` watching `namespaces` (all if none), with the control plane's administrator, the test
    /// admin key and its test's ModelRuntimes ([`test_runtime_selector`]), to be configured and started.
    pub fn watching(namespaces: &[&str]) -> FerryRunOptions {
        let mut env = BTreeMap::from([
            (
                "FERRY_ADMIN_KEY_FILE".to_owned(),
                admin_key_file().to_str().expect("UTF-8 path").to_owned(),
            ),
            (
                "FERRY_RUNTIME_SELECTOR".to_owned(),
                test_runtime_selector(namespaces),
            ),
        ]);
        if !namespaces.is_empty() {
            env.insert("FERRY_WATCH_NAMESPACES".into(), namespaces.join(","));
        }
        FerryRunOptions {
            kubeconfig: None,
            env,
            only_given_env: false,
            log: None,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.lock().unwrap().id()
    }

    /// How it ended, if it has.
    pub fn exited(&self) -> Option<ExitStatus> {
        self.child.lock().unwrap().try_wait().ok().flatten()
    }

    /// Everything it printed so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// `GET path` on its metrics port: the whole HTTP/1.1 response, status line first.
    pub fn http_get(&self, path: &str) -> std::io::Result<String> {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", self.metrics_port))?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        )?;
        let mut response = String::new();
        stream.read_to_string(&mut response)?;
        Ok(response)
    }

    /// The body of its `/metrics`, once the endpoint answers (within 20 s).
    pub fn metrics(&self) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(response) = self.http_get("/metrics") {
                if let Some((_, body)) = response.split_once("\r\n\r\n") {
                    return body.to_owned();
                }
            }
            assert!(
                Instant::now() < deadline,
                "the metrics endpoint of ferry run never answered:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGTERM, then waits up to `grace` for it to exit; SIGKILL after that. The exit status, if it exited by
    /// itself.
    pub fn terminate(&self, grace: Duration) -> Option<ExitStatus> {
        if let Some(status) = self.exited() {
            return Some(status);
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Some(status) = self.exited() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
        None
    }

    /// SIGKILL: it stops at once, wherever it is, without releasing anything.
    pub fn kill(&self) {
        let mut child = self.child.lock().unwrap();
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for FerryRun {
    fn drop(&mut self) {
        self.kill();
        if !self.keep_log {
            let _ = std::fs::remove_file(&self.log);
        }
    }
}

/// A loopback port nothing listens on.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}
