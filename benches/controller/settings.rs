//! The benchmark's settings, from the environment (the table in main.rs).

use std::collections::BTreeSet;
use std::time::Duration;

pub struct Settings {
    pub parts: BTreeSet<String>,
    pub rollouts: usize,
    pub parallel: usize,
    pub replicas: i32,
    pub concurrency: u16,
    pub quiet: Duration,
    pub models: usize,
    pub cold_timeout: Duration,
    pub cold_settle: Duration,
    pub pods_wait: Duration,
}

pub fn env_number<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(value) => value
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={value:?} is not a valid number")),
        Err(_) => default,
    }
}

impl Settings {
    pub fn from_env() -> Self {
        let parts = std::env::var("FERRY_BENCH_PARTS")
            .unwrap_or_else(|_| "rollouts,quiet,plain,cold".into())
            .split(',')
            .map(|p| p.trim().to_owned())
            .filter(|p| !p.is_empty())
            .collect();
        let models = env_number("FERRY_BENCH_MODELS", 1000usize);
        Settings {
            parts,
            rollouts: env_number("FERRY_BENCH_ROLLOUTS", 100),
            parallel: env_number("FERRY_BENCH_PARALLEL", 4usize).max(1),
            replicas: env_number("FERRY_BENCH_REPLICAS", 2i32).max(1),
            concurrency: env_number("FERRY_BENCH_CONCURRENCY", 8u16).max(1),
            quiet: Duration::from_secs(env_number("FERRY_BENCH_QUIET_SECONDS", 60u64)),
            models,
            cold_timeout: Duration::from_secs(env_number(
                "FERRY_BENCH_COLD_TIMEOUT_SECONDS",
                300.max(models as u64 / 2),
            )),
            cold_settle: Duration::from_secs(env_number("FERRY_BENCH_COLD_SETTLE_SECONDS", 120u64)),
            pods_wait: Duration::from_secs(env_number("FERRY_BENCH_PODS_WAIT_SECONDS", 1800u64)),
        }
    }

    pub fn runs(&self, part: &str) -> bool {
        self.parts.contains(part)
    }

    /// Whether part 2 (the floor or the cold start) runs.
    pub fn runs_scale(&self) -> bool {
        self.runs("plain") || self.runs("cold")
    }
}
