//! Shared harness of the integration tests: a real kube-apiserver + etcd + kube-controller-manager.
//!
//! One control plane serves a whole test binary. It is started by `e2e/control-plane.sh start` on first use
//! (with a watchdog that stops it when this process exits), or reused when `FERRY_TEST_KUBECONFIG` names the
//! kubeconfig of one that is already running (`.ci/run` does that so every test binary shares one). The CRDs
//! from `crds/` are installed once; each test gets its own random namespace, deleted when it ends.
//!
//! Beside it: `kubelet` (the tests play the kubelet, as the plane has none), `controller` (the controller in
//! this process or as a `ferry run` process) and `wait` (`eventually`, `revision_of`).
//!
//! ModelRuntimes are cluster-scoped, and the plane is shared: a controller of the harness chooses only among the
//! ModelRuntimes labelled [`TEST_CATALOGUE`]`=<its first namespace>` (unless told otherwise), so that one test's
//! catalogue, or the built-in runtimes of a chart another test installs, change nothing for the others.
#![allow(dead_code)] // each test binary uses a different part of the harness

pub mod controller;
pub mod kubelet;
pub mod wait;

#[allow(unused_imports)] // each test binary uses a different part of the harness
pub use controller::{FerryRun, InProcess};
#[allow(unused_imports)]
pub use kubelet::Kubelet;
#[allow(unused_imports)]
pub use wait::{eventually, eventually_explained, revision_of, WAIT};

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

pub const INSTALL_HINT: &str = "bash e2e/control-plane.sh install";

/// The label of the ModelRuntimes a test's controller sees; its value is the controller's first namespace.
pub const TEST_CATALOGUE: &str = "ferry.dev/test-catalogue";

/// The runtime selector of a controller watching `namespaces` (none: all of them).
pub fn test_runtime_selector(namespaces: &[&str]) -> String {
    format!(
        "{TEST_CATALOGUE}={}",
        namespaces.first().copied().unwrap_or("all-namespaces")
    )
}

/// A key file for `ferry run --admin-key-file`, made once per test binary.
pub fn admin_key_file() -> &'static Path {
    static KEY: OnceLock<PathBuf> = OnceLock::new();
    KEY.get_or_init(|| {
        let path =
            std::env::temp_dir().join(format!("ferry-test-admin-key-{}", std::process::id()));
        std::fs::write(
            &path,
            format!("{}\n", ferry::admin_credential::new_id().repeat(4)),
        )
        .expect("write the admin key file");
        path
    })
}

/// Root of the repository.
pub fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

pub struct ControlPlane {
    pub kubeconfig: PathBuf,
    pub bin_dir: PathBuf,
}

static CONTROL_PLANE: OnceLock<ControlPlane> = OnceLock::new();

/// The control plane of this test binary, started (and the CRDs installed) on first use.
pub fn control_plane() -> &'static ControlPlane {
    CONTROL_PLANE.get_or_init(|| {
        let bin_dir = installed_bin_dir();
        let kubeconfig = match std::env::var_os("FERRY_TEST_KUBECONFIG") {
            Some(path) => PathBuf::from(path),
            None => start_control_plane().join("kubeconfig"),
        };
        let plane = ControlPlane {
            kubeconfig,
            bin_dir,
        };
        plane.install_crds();
        plane
    })
}

/// A control plane started for one caller alone (a benchmark part that must not inherit another part's objects),
/// CRDs installed; stopped and its directory removed when dropped.
pub struct OwnControlPlane {
    pub plane: ControlPlane,
    dir: PathBuf,
}

impl OwnControlPlane {
    pub fn start() -> Self {
        let dir = start_control_plane();
        let plane = ControlPlane {
            kubeconfig: dir.join("kubeconfig"),
            bin_dir: installed_bin_dir(),
        };
        plane.install_crds();
        OwnControlPlane { plane, dir }
    }
}

impl Drop for OwnControlPlane {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(control_plane_script())
            .arg("stop")
            .arg(&self.dir)
            .output();
    }
}

fn control_plane_script() -> PathBuf {
    repo_root().join("e2e/control-plane.sh")
}

fn installed_bin_dir() -> PathBuf {
    let output = Command::new("bash")
        .arg(control_plane_script())
        .arg("bin-dir")
        .output()
        .expect("bash runs e2e/control-plane.sh");
    assert!(
        output.status.success(),
        "the local control plane is not installed; install it with `{INSTALL_HINT}` ({})",
        String::from_utf8_lossy(&output.stderr).trim()
    );
    let dir = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    for binary in [
        "etcd",
        "kube-apiserver",
        "kube-controller-manager",
        "kubectl",
    ] {
        assert!(
            dir.join(binary).is_file(),
            "{binary} is missing from {}; install it with `{INSTALL_HINT}`",
            dir.display()
        );
    }
    dir
}

fn start_control_plane() -> PathBuf {
    let output = Command::new("bash")
        .arg(control_plane_script())
        .args(["start", "--watch-pid", &std::process::id().to_string()])
        .output()
        .expect("bash runs e2e/control-plane.sh");
    assert!(
        output.status.success(),
        "`e2e/control-plane.sh start` failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let dir = stdout
        .lines()
        .last()
        .expect("`e2e/control-plane.sh start` prints its directory last");
    PathBuf::from(dir.trim())
}

impl ControlPlane {
    /// Runs kubectl against this control plane and returns what it printed, whatever its exit code.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_with_stdin(args, None)
    }

    /// Runs kubectl with `stdin` as its standard input (for `-f -`).
    pub fn kubectl_with_stdin(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut command = Command::new(self.bin_dir.join("kubectl"));
        command.env("KUBECONFIG", &self.kubeconfig).args(args);
        run_with_stdin(command, stdin)
    }

    /// Runs kubectl and panics with its output unless it succeeds; returns stdout.
    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        expect_success(self.kubectl(args), &format!("kubectl {}", args.join(" ")))
    }

    fn install_crds(&self) {
        let crds = repo_root().join("crds");
        let crds = crds.to_str().expect("repository path is UTF-8");
        self.kubectl_ok(&["apply", "--server-side", "--force-conflicts", "-f", crds]);
        // A CRD the API server has not given a status yet makes `kubectl wait` fail at once ("status.conditions
        // accessor error") instead of waiting: ask again until it is Established.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        let wait = [
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "-f",
            crds,
        ];
        while !self.kubectl(&wait).status.success() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(500));
        }
        self.kubectl_ok(&wait);
    }

    /// Creates a namespace with a random name; returns the name.
    pub fn create_namespace(&self) -> String {
        let suffix: u32 = rand::random();
        let name = format!("ferry-test-{suffix:08x}");
        self.kubectl_ok(&["create", "namespace", &name]);
        name
    }

    /// A kube client authenticated as the control plane's administrator.
    pub async fn client(&self) -> Client {
        client_of(&self.kubeconfig).await
    }

    /// A kubeconfig that authenticates with a fresh token (TokenRequest API) of
    /// `namespace/service_account`: the identity a chart gives the controller's pods.
    pub fn service_account_kubeconfig(
        &self,
        namespace: &str,
        service_account: &str,
    ) -> TokenKubeconfig {
        let token = self.kubectl_ok(&[
            "create",
            "token",
            service_account,
            "-n",
            namespace,
            "--duration=1h",
        ]);
        let admin: serde_json::Value =
            serde_yaml::from_str(&std::fs::read_to_string(&self.kubeconfig).unwrap()).unwrap();
        let cluster = &admin["clusters"][0]["cluster"];
        let kubeconfig = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "local", "cluster": {
                "server": cluster["server"],
                "certificate-authority-data": cluster["certificate-authority-data"],
            }}],
            "users": [{"name": service_account, "user": {"token": token.trim()}}],
            "contexts": [{"name": "sa", "context": {"cluster": "local", "user": service_account, "namespace": namespace}}],
            "current-context": "sa",
        });
        let path = std::env::temp_dir().join(format!(
            "ferry-{namespace}-{service_account}-{}.kubeconfig",
            std::process::id()
        ));
        std::fs::write(&path, serde_yaml::to_string(&kubeconfig).unwrap()).unwrap();
        TokenKubeconfig(path)
    }
}

/// The client configuration of `kubeconfig`; `kube::client::ClientBuilder::try_from` it to add layers (a
/// request counter).
pub async fn client_config(kubeconfig: &Path) -> Config {
    let kubeconfig = Kubeconfig::read_from(kubeconfig).expect("kubeconfig parses");
    Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("kubeconfig is usable")
}

/// A client of `kubeconfig`.
pub async fn client_of(kubeconfig: &Path) -> Client {
    Client::try_from(client_config(kubeconfig).await).expect("client builds")
}

/// A kubeconfig file holding a token, removed when dropped.
pub struct TokenKubeconfig(pub PathBuf);

impl TokenKubeconfig {
    pub async fn client(&self) -> Client {
        client_of(&self.0).await
    }
}

impl Drop for TokenKubeconfig {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Runs `command` to completion with `stdin` (if any) as its standard input, capturing its output.
pub fn run_with_stdin(mut command: Command, stdin: Option<&str>) -> Output {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = command
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the command starts");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .expect("stdin is piped")
            .write_all(input.as_bytes())
            .expect("the command reads its input");
    }
    child.wait_with_output().expect("the command finishes")
}

/// Stdout of a command that must have succeeded; panics with everything it printed otherwise.
pub fn expect_success(output: Output, what: &str) -> String {
    assert!(
        output.status.success(),
        "{what} failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A ModelRuntime of one test's catalogue (labelled [`TEST_CATALOGUE`]`=<namespace>`, named after the namespace:
/// ModelRuntimes are cluster-scoped), deleted (without waiting) when the test ends, pass or fail.
pub struct TestRuntime {
    pub name: String,
}

impl TestRuntime {
    /// Creates `<namespace>-<suffix>` with `spec`.
    pub async fn create(
        client: &Client,
        namespace: &str,
        suffix: &str,
        spec: serde_json::Value,
    ) -> TestRuntime {
        let name = format!("{namespace}-{suffix}");
        let runtime: ferry::api::ModelRuntime = serde_json::from_value(serde_json::json!({
            "apiVersion": "ferry.dev/v1alpha1", "kind": "ModelRuntime",
            "metadata": {"name": name, "labels": {TEST_CATALOGUE: namespace}},
            "spec": spec,
        }))
        .expect("a valid ModelRuntime");
        kube::Api::<ferry::api::ModelRuntime>::all(client.clone())
            .create(&kube::api::PostParams::default(), &runtime)
            .await
            .unwrap_or_else(|e| panic!("create ModelRuntime {name}: {e}"));
        TestRuntime { name }
    }
}

impl Drop for TestRuntime {
    fn drop(&mut self) {
        control_plane().kubectl(&[
            "delete",
            "modelruntime",
            &self.name,
            "--wait=false",
            "--ignore-not-found",
        ]);
    }
}

/// A namespace of one test, deleted (without waiting) when the test ends, pass or fail.
pub struct TestNamespace {
    pub name: String,
}

impl TestNamespace {
    pub fn create() -> Self {
        TestNamespace {
            name: control_plane().create_namespace(),
        }
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        control_plane().kubectl(&["delete", "namespace", &self.name, "--wait=false"]);
    }
}
