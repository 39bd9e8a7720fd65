//! The units load progress is shown in: steps of 5 percent, bytes in words.

/// Downloads are shown (and written to the status) in steps of this many percent.
pub const PROGRESS_STEP_PERCENT: u64 = 5;

/// The step (0..=20) `done` is at, when the total is known.
pub fn step(done: u64, total: Option<u64>) -> Option<u64> {
    let total = total.filter(|t| *t > 0)?;
    Some(done.min(total) * (100 / PROGRESS_STEP_PERCENT) / total)
}

/// `done` rounded down to its step; unchanged when the total is unknown.
pub fn stepped(done: u64, total: Option<u64>) -> u64 {
    match (step(done, total), total) {
        (Some(step), Some(total)) => {
            (u128::from(total) * u128::from(step) / u128::from(100 / PROGRESS_STEP_PERCENT)) as u64
        }
        _ => done,
    }
}

/// Percent of `done` in steps of [`PROGRESS_STEP_PERCENT`].
pub fn percent(done: u64, total: Option<u64>) -> Option<i32> {
    step(done, total).map(|s| (s * PROGRESS_STEP_PERCENT) as i32)
}

/// "1.2 GiB".
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}
