//! Supervised Python worker processes, one model version each.
//!
//! A `Pool` owns `size` processes that loaded the same file; a request borrows one for the duration of a call, so
//! throughput scales with cores without sharing a GIL. A worker that dies, answers garbage or overruns the request
//! timeout is killed and replaced in the background by a fresh process loading the same file, and the request
//! that met it fails with the way it ended. A worker is never reused for another model, so a restarted process
//! can only ever serve the version its pool was made for. Workers that outgrow the memory limit are replaced
//! between requests.

use std::io::{BufReader, BufWriter, Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use serde_json::Value;

use crate::metrics::ReplacedLabels;

/// A header larger than this is a broken worker, not a model's answer.
const MAX_HEADER_BYTES: u32 = 64 << 20;
/// Frames up to this size are written to a worker in one system call.
const FRAME_BUFFER_BYTES: usize = 64 << 10;
/// How often a worker's memory is read: every this many requests.
const RSS_CHECK_EVERY: u64 = 32;
/// Longest wait between attempts to replace a worker that keeps failing to load.
const MAX_RESTART_BACKOFF: Duration = Duration::from_secs(30);

/// How to start a worker process.
#[derive(Debug, Clone)]
pub struct Launch {
    pub python: PathBuf,
    pub script: PathBuf,
    /// The whole environment of the worker: it inherits nothing from ferry-server (store credentials stay out).
    pub env: Vec<(String, String)>,
    pub cwd: PathBuf,
}

/// How a call to a worker went wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// The worker answered with an error of its own; `kind` is the worker's (`bad_input`, `unsafe`, `load`,
    /// `internal`).
    #[error("{message}")]
    Answered { kind: String, message: String },
    /// The process is gone, overran its time or broke the protocol.
    #[error("the Python worker {0}")]
    Died(Ended),
}

/// How a worker process ended, or why none could serve.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Ended {
    #[error("exited with code {0}")]
    Exited(i32),
    #[error("was killed by signal {0}{name}", name = signal_name(*.0))]
    Signalled(i32),
    #[error("did not answer within {} s and was stopped", .0.as_secs_f64())]
    TimedOut(Duration),
    #[error("broke the protocol ({0}) and was stopped")]
    Broke(String),
    #[error("could not start ({0})")]
    NotStarted(String),
    #[error("pool has no process ready after {} s{}", .after.as_secs_f64(), .last.as_ref().map(|l| format!(" (the last restart: {l})")).unwrap_or_default())]
    NoneReady {
        after: Duration,
        last: Option<String>,
    },
}

impl Ended {
    /// The `reason` label of `ferry_python_workers_replaced_total`.
    pub fn label(&self) -> &'static str {
        match self {
            Ended::Exited(_) => "exited",
            Ended::Signalled(_) => "signalled",
            Ended::TimedOut(_) => "timed_out",
            Ended::Broke(_) => "broke_protocol",
            Ended::NotStarted(_) => "not_started",
            Ended::NoneReady { .. } => "none_ready",
        }
    }
}

/// One worker process.
pub struct Worker {
    child: Arc<Mutex<Child>>,
    /// Buffered so that a small frame leaves in one write; large buffers go straight through.
    stdin: BufWriter<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    calls: u64,
}

/// A reply: the header's `ok` value and the buffers after it.
pub type Reply = (Value, Vec<Vec<u8>>);

impl Worker {
    pub fn spawn(launch: &Launch) -> Result<Worker, CallError> {
        let mut child = Command::new(&launch.python)
            .arg("-I")
            .arg("-u")
            .arg(&launch.script)
            .env_clear()
            .envs(launch.env.iter().map(|(k, v)| (k, v)))
            .current_dir(&launch.cwd)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| {
                CallError::Died(Ended::NotStarted(format!(
                    "{}: {e}",
                    launch.python.display()
                )))
            })?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(CallError::Died(Ended::NotStarted("no pipes".to_owned())));
        };
        Ok(Worker {
            child: Arc::new(Mutex::new(child)),
            stdin: BufWriter::with_capacity(FRAME_BUFFER_BYTES, stdin),
            stdout: BufReader::new(stdout),
            calls: 0,
        })
    }

    fn pid(&self) -> u32 {
        lock(&self.child).id()
    }

    /// Sends one request and reads its reply, killing the process if it takes longer than `timeout`.
    pub fn call(
        &mut self,
        header: &Value,
        buffers: &[&[u8]],
        timeout: Duration,
    ) -> Result<Reply, CallError> {
        self.calls += 1;
        let alarm = watchdog().arm(self.child.clone(), timeout);
        let result = self.exchange(header, buffers);
        let fired = alarm.disarm();
        match result {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err((kind, message))) => Err(CallError::Answered { kind, message }),
            Err(_) if fired => {
                self.stop();
                Err(CallError::Died(Ended::TimedOut(timeout)))
            }
            Err(io) => Err(CallError::Died(self.ended(&io))),
        }
    }

    #[allow(clippy::type_complexity)]
    fn exchange(
        &mut self,
        header: &Value,
        buffers: &[&[u8]],
    ) -> std::io::Result<Result<Reply, (String, String)>> {
        let mut header = header.clone();
        header["buffers"] = buffers.iter().map(|b| b.len()).collect();
        let bytes = serde_json::to_vec(&header).map_err(std::io::Error::other)?;
        let length = u32::try_from(bytes.len()).map_err(std::io::Error::other)?;
        self.stdin.write_all(&length.to_le_bytes())?;
        self.stdin.write_all(&bytes)?;
        for buffer in buffers {
            self.stdin.write_all(buffer)?;
        }
        self.stdin.flush()?;

        let mut length = [0u8; 4];
        self.stdout.read_exact(&mut length)?;
        let length = u32::from_le_bytes(length);
        if length > MAX_HEADER_BYTES {
            return Err(std::io::Error::other(format!(
                "sent a {length}-byte header"
            )));
        }
        let mut bytes = vec![0u8; length as usize];
        self.stdout.read_exact(&mut bytes)?;
        let mut reply: Value = serde_json::from_slice(&bytes)
            .map_err(|e| std::io::Error::other(format!("sent a header that is not JSON: {e}")))?;
        let sizes: Vec<usize> = reply["buffers"]
            .as_array()
            .map(|sizes| {
                sizes
                    .iter()
                    .filter_map(|s| s.as_u64().and_then(|s| usize::try_from(s).ok()))
                    .collect()
            })
            .unwrap_or_default();
        let mut buffers = Vec::with_capacity(sizes.len().min(1024));
        for size in sizes {
            let mut buffer = Vec::new();
            let read = (&mut self.stdout)
                .take(size as u64)
                .read_to_end(&mut buffer)?;
            if read != size {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            buffers.push(buffer);
        }
        if let Some(error) = reply.get("error") {
            let kind = error["kind"].as_str().unwrap_or("internal").to_owned();
            let message = error["message"].as_str().unwrap_or("").to_owned();
            return Ok(Err((kind, message)));
        }
        Ok(Ok((reply["ok"].take(), buffers)))
    }

    /// How the process ended (after a broken pipe or a short read), waiting for it briefly.
    fn ended(&mut self, io: &std::io::Error) -> Ended {
        let mut child = lock(&self.child);
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            match child.try_wait() {
                Ok(Some(status)) => return describe(status),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Ended::Broke(io.to_string());
                }
            }
        }
    }

    fn stop(&mut self) {
        let mut child = lock(&self.child);
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Resident memory of the process, from /proc.
    fn rss_bytes(&self) -> Option<u64> {
        let statm = std::fs::read_to_string(format!("/proc/{}/statm", self.pid())).ok()?;
        let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
        Some(pages * 4096)
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.stop();
    }
}

fn describe(status: ExitStatus) -> Ended {
    match (status.code(), status.signal()) {
        (Some(code), _) => Ended::Exited(code),
        (None, Some(signal)) => Ended::Signalled(signal),
        _ => Ended::Broke(format!("ended ({status})")),
    }
}

fn signal_name(signal: i32) -> &'static str {
    match signal {
        6 => " (SIGABRT)",
        9 => " (SIGKILL, e.g. out of memory)",
        11 => " (SIGSEGV)",
        15 => " (SIGTERM)",
        _ => "",
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Kills workers whose call overran its deadline. One thread for the whole server.
struct Watchdog {
    armed: Mutex<Vec<Armed>>,
    next: AtomicU64,
}

struct Armed {
    id: u64,
    deadline: Instant,
    child: Arc<Mutex<Child>>,
    fired: Arc<AtomicBool>,
}

struct Alarm {
    id: u64,
    fired: Arc<AtomicBool>,
}

impl Alarm {
    fn disarm(self) -> bool {
        lock(&watchdog().armed).retain(|a| a.id != self.id);
        self.fired.load(Ordering::SeqCst)
    }
}

fn watchdog() -> &'static Watchdog {
    static WATCHDOG: OnceLock<Watchdog> = OnceLock::new();
    WATCHDOG.get_or_init(|| {
        std::thread::Builder::new()
            .name("python-watchdog".to_owned())
            .spawn(|| loop {
                std::thread::sleep(Duration::from_millis(50));
                let now = Instant::now();
                for armed in lock(&watchdog().armed).iter() {
                    if armed.deadline <= now && !armed.fired.swap(true, Ordering::SeqCst) {
                        // Killing closes the pipes, so the caller's read ends at once.
                        let _ = lock(&armed.child).kill();
                    }
                }
            })
            .expect("the watchdog thread starts");
        Watchdog {
            armed: Mutex::new(Vec::new()),
            next: AtomicU64::new(0),
        }
    })
}

impl Watchdog {
    fn arm(&self, child: Arc<Mutex<Child>>, timeout: Duration) -> Alarm {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let fired = Arc::new(AtomicBool::new(false));
        lock(&self.armed).push(Armed {
            id,
            deadline: Instant::now() + timeout,
            child,
            fired: fired.clone(),
        });
        Alarm { id, fired }
    }
}

/// How a pool's workers are started, loaded and limited.
#[derive(Debug, Clone)]
pub struct PoolSettings {
    pub launch: Launch,
    /// The `load` request every worker of the pool gets.
    pub load: Value,
    pub size: usize,
    /// Longest a load may take in one worker.
    pub load_timeout: Duration,
    /// Longest a request may take.
    pub request_timeout: Duration,
    /// A worker above this resident size is replaced between requests.
    pub max_rss_bytes: Option<u64>,
}

/// Workers replaced, by the `reason` label (`Ended::label`, or `memory`).
pub type Replaced = Family<ReplacedLabels, Counter>;

pub struct Pool {
    shared: Arc<Shared>,
}

struct Shared {
    settings: PoolSettings,
    idle: Mutex<Vec<Worker>>,
    available: Condvar,
    closed: AtomicBool,
    replaced: Replaced,
    /// Why the last replacement failed, for the message of a request that found no worker.
    last_failure: Mutex<Option<String>>,
}

impl Pool {
    /// Starts every worker and loads the model in each, in parallel. The first failure stops them all; the
    /// reply is the first worker's (they loaded the same file).
    pub fn start(settings: PoolSettings, replaced: Replaced) -> Result<(Pool, Value), CallError> {
        let size = settings.size.max(1);
        let started: Vec<Result<(Worker, Value), CallError>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..size)
                .map(|_| scope.spawn(|| load_one(&settings)))
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| {
                        Err(CallError::Died(Ended::NotStarted(
                            "its loader thread panicked".into(),
                        )))
                    })
                })
                .collect()
        });
        let mut workers = Vec::with_capacity(size);
        let mut reply = None;
        for result in started {
            let (worker, loaded) = result?;
            workers.push(worker);
            reply.get_or_insert(loaded);
        }
        let shared = Arc::new(Shared {
            settings,
            idle: Mutex::new(workers),
            available: Condvar::new(),
            closed: AtomicBool::new(false),
            replaced,
            last_failure: Mutex::new(None),
        });
        Ok((Pool { shared }, reply.unwrap_or(Value::Null)))
    }

    pub fn size(&self) -> usize {
        self.shared.settings.size.max(1)
    }

    fn replaced(&self, reason: &str) {
        self.shared
            .replaced
            .get_or_create(&ReplacedLabels {
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// One request on a free worker. A worker that dies or overruns is replaced in the background.
    pub fn call(&self, header: &Value, buffers: &[&[u8]]) -> Result<Reply, CallError> {
        let mut worker = self.take()?;
        let settings = &self.shared.settings;
        let result = worker.call(header, buffers, settings.request_timeout);
        match &result {
            Err(CallError::Died(why)) => {
                tracing::warn!(worker = %why, "a Python worker failed during a request; replacing it");
                drop(worker);
                self.replaced(why.label());
                replace(self.shared.clone());
            }
            _ => {
                let too_big = settings
                    .max_rss_bytes
                    .filter(|_| worker.calls.is_multiple_of(RSS_CHECK_EVERY))
                    .and_then(|limit| {
                        worker
                            .rss_bytes()
                            .filter(|&rss| rss > limit)
                            .map(|rss| (rss, limit))
                    });
                if let Some((rss, limit)) = too_big {
                    tracing::warn!(
                        rss,
                        limit,
                        "a Python worker outgrew its memory limit; replacing it"
                    );
                    drop(worker);
                    self.replaced("memory");
                    replace(self.shared.clone());
                } else {
                    self.give_back(worker);
                }
            }
        }
        result
    }

    /// Runs `header` once on every worker (the warm-up), so each has paid its first-call cost.
    pub fn on_every_worker(&self, header: &Value, buffers: &[&[u8]]) -> Result<(), CallError> {
        let mut taken = Vec::new();
        let mut result = Ok(());
        for _ in 0..self.size() {
            match self.take() {
                Ok(worker) => taken.push(worker),
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        for worker in &mut taken {
            if result.is_ok() {
                result = worker
                    .call(header, buffers, self.shared.settings.request_timeout)
                    .map(drop);
            }
        }
        for worker in taken {
            self.give_back(worker);
        }
        result
    }

    fn take(&self) -> Result<Worker, CallError> {
        let deadline = Instant::now() + self.shared.settings.request_timeout;
        let mut idle = lock(&self.shared.idle);
        loop {
            if let Some(worker) = idle.pop() {
                return Ok(worker);
            }
            let now = Instant::now();
            if now >= deadline {
                let last = lock(&self.shared.last_failure).clone();
                return Err(CallError::Died(Ended::NoneReady {
                    after: self.shared.settings.request_timeout,
                    last,
                }));
            }
            idle = self
                .shared
                .available
                .wait_timeout(idle, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    fn give_back(&self, worker: Worker) {
        give_back(&self.shared, worker);
    }
}

fn give_back(shared: &Shared, worker: Worker) {
    if shared.closed.load(Ordering::SeqCst) {
        return;
    }
    lock(&shared.idle).push(worker);
    shared.available.notify_one();
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.shared.closed.store(true, Ordering::SeqCst);
        lock(&self.shared.idle).clear();
    }
}

fn load_one(settings: &PoolSettings) -> Result<(Worker, Value), CallError> {
    let mut worker = Worker::spawn(&settings.launch)?;
    let (reply, _) = worker.call(&settings.load, &[], settings.load_timeout)?;
    Ok((worker, reply))
}

/// Starts a replacement worker in the background, retrying with a growing pause until it loads or the pool
/// is dropped.
fn replace(shared: Arc<Shared>) {
    let spawned = std::thread::Builder::new()
        .name("python-restart".to_owned())
        .spawn(move || {
            let mut backoff = Duration::from_millis(200);
            while !shared.closed.load(Ordering::SeqCst) {
                match load_one(&shared.settings) {
                    Ok((worker, _)) => {
                        give_back(&shared, worker);
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "a replacement Python worker failed to load");
                        *lock(&shared.last_failure) = Some(e.to_string());
                        std::thread::sleep(backoff);
                        backoff = (backoff * 2).min(MAX_RESTART_BACKOFF);
                    }
                }
            }
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start a thread to replace a Python worker");
    }
}
