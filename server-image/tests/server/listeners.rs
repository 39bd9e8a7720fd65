//! A listener that stops makes the server unready and stops it: the inference, admin and gRPC ports are each part
//! of readiness. The tests break a listening socket from outside the process (the same socket, taken with
//! pidfd_getfd(2) and shut down), so its accept fails as it would if the kernel tore the socket down.

use std::process::Command;
use std::time::{Duration, Instant};

use reqwest::StatusCode;

use crate::support::http_store::{Behavior, HttpStore};
use crate::support::server::{ready_server, Server, ServerBuilder};
use crate::support::{file_uri, model_bytes, model_path, sha256_hex};

/// Takes the socket `fd` of process `pid` and shuts it down (Python's ctypes for pidfd_getfd, syscall 438).
const SHUT_DOWN_SOCKET: &str = r#"
import ctypes, os, socket, sys
libc = ctypes.CDLL(None, use_errno=True)
pid, fd = int(sys.argv[1]), int(sys.argv[2])
pidfd = os.pidfd_open(pid)
local = libc.syscall(438, pidfd, fd, 0)
if local < 0:
    raise OSError(ctypes.get_errno(), "pidfd_getfd")
socket.socket(fileno=local).shutdown(socket.SHUT_RDWR)
"#;

fn port_of(url: &str) -> u16 {
    url.rsplit(':').next().unwrap().parse().unwrap()
}

/// The descriptor, in process `pid`, of its listening TCP socket on `port`.
fn listening_fd(pid: u32, port: u16) -> u32 {
    let suffix = format!(":{port:04X}");
    let inode = ["tcp", "tcp6"]
        .iter()
        .filter_map(|table| std::fs::read_to_string(format!("/proc/{pid}/net/{table}")).ok())
        .flat_map(|text| text.lines().skip(1).map(str::to_owned).collect::<Vec<_>>())
        .find_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // local address, state (0A: LISTEN), inode.
            (fields[1].ends_with(&suffix) && fields[3] == "0A").then(|| fields[9].to_owned())
        })
        .unwrap_or_else(|| panic!("no listening socket on port {port}"));
    let target = format!("socket:[{inode}]");
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(Result::ok)
        .find(|entry| {
            std::fs::read_link(entry.path()).is_ok_and(|link| link.to_str() == Some(&target))
        })
        .and_then(|entry| entry.file_name().to_str()?.parse().ok())
        .unwrap_or_else(|| panic!("process {pid} holds no descriptor of {target}"))
}

fn shut_down_listener(server: &Server, url: &str) {
    let fd = listening_fd(server.pid(), port_of(url));
    let output = Command::new("python3")
        .args([
            "-c",
            SHUT_DOWN_SOCKET,
            &server.pid().to_string(),
            &fd.to_string(),
        ])
        .output()
        .expect("python3 runs");
    assert!(
        output.status.success(),
        "shutting the socket down failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Probes readiness on the admin port every 20 ms until the process exits; returns the exit code and every
/// status answered (a refused connection is no answer).
async fn probe_until_exit(
    server: &mut Server,
    timeout: Duration,
) -> (Option<i32>, Vec<StatusCode>) {
    let deadline = Instant::now() + timeout;
    let mut answers = Vec::new();
    loop {
        if let Some(status) = server.exited() {
            return (status.code(), answers);
        }
        assert!(
            Instant::now() < deadline,
            "ferry-server still runs {timeout:?} after its listener broke; readiness answered {answers:?}:\n{}",
            server.log()
        );
        if let Ok(response) = server
            .client
            .get(format!("{}/v2/health/ready", server.admin))
            .timeout(Duration::from_secs(2))
            .send()
            .await
        {
            answers.push(response.status());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn assert_listener_failed(server: &Server, code: Option<i32>, listener: &str) {
    assert_eq!(code, Some(1), "exit code:\n{}", server.log());
    let termination = server.termination().expect("a termination message");
    assert_eq!(termination["reason"], "ListenerFailed", "{termination}");
    let message = termination["message"].as_str().unwrap();
    assert!(
        message.starts_with(&format!("the {listener} listener on 127.0.0.1:"))
            && message.contains("cannot accept connections"),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_listener_that_breaks_during_the_download_means_never_ready_and_exit_1() {
    let bytes = model_bytes("gb_multiclass.onnx");
    // About 3 s of download: the break comes while it runs.
    let store = HttpStore::start(vec![(
        "/slow.onnx",
        Behavior::slow(bytes.clone(), 1024, 100),
    )])
    .await;
    let mut server = ServerBuilder::new("m", &store.uri("/slow.onnx"), "1")
        .sha256(&sha256_hex(&bytes))
        .start();
    let (code, body) = server.admin_get("/v2/health/ready").await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    let grpc = server.grpc.clone();
    shut_down_listener(&server, &grpc);

    let (code, answers) = probe_until_exit(&mut server, Duration::from_secs(20)).await;
    assert!(
        !answers.contains(&StatusCode::OK),
        "ready after the gRPC listener broke: {answers:?}"
    );
    assert_listener_failed(&server, code, "gRPC");
    assert!(
        server.log().contains("a listener failed; no longer ready"),
        "{}",
        server.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inference_listener_that_breaks_after_ready_turns_readiness_off_for_good_and_exits_1() {
    let mut server = ready_server(ServerBuilder::new(
        "iris",
        &file_uri(&model_path("logreg.onnx")),
        "1",
    ))
    .await;
    let inference = server.inference.clone();
    shut_down_listener(&server, &inference);

    let (code, answers) = probe_until_exit(&mut server, Duration::from_secs(20)).await;
    // The probes that ran before the server noticed may be 200; none after the first that was not.
    if let Some(first_unready) = answers.iter().position(|s| *s != StatusCode::OK) {
        assert!(
            answers[first_unready..]
                .iter()
                .all(|s| *s == StatusCode::SERVICE_UNAVAILABLE),
            "{answers:?}"
        );
    }
    assert_listener_failed(&server, code, "inference");
}
