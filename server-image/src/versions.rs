//! Which model versions are loaded and which one serves: the bookkeeping of stage, switch and unload, kept apart
//! from the models themselves so it can be tested on its own.
//!
//! ```text
//!   load (no stage) ─► new version serves, the one that served is dropped
//!   load (stage)    ─► new version loaded as `staged`, nothing else changes
//!   switch v        ─► v serves; the one that served stays loaded as `previous`
//!   unload v        ─► v dropped (never the serving one)
//! ```
//!
//! Each version is held as an `Arc`: a request clones it when it starts and finishes on it, whatever happens to
//! the table meanwhile; the memory goes when the table and the last request have let go.

use std::sync::Arc;
use std::time::SystemTime;

use crate::contract::{SwitchView, VersionState};

/// One loaded version.
pub struct Entry<T> {
    pub version: String,
    pub value: Arc<T>,
    /// When its load finished (RFC 3339, milliseconds).
    pub loaded_at: String,
    /// When it last started serving; `None` if it never served (so it is `staged` while it does not serve).
    serving_since: Option<String>,
}

pub struct VersionTable<T> {
    /// In load order.
    entries: Vec<Entry<T>>,
    serving: Option<String>,
    last_switch: Option<SwitchView>,
}

/// The version a switch or a request names is not loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotLoaded {
    /// The loaded versions, e.g. `"1" (serving), "2" (staged)`, for the error message.
    pub loaded: String,
}

/// An unload of the serving version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServingVersion;

/// What a switch did.
pub struct Switch<T> {
    /// The version that served before; `None` if none did.
    pub previous: Option<String>,
    /// The moment of the swap.
    pub at: String,
    /// `false` when the version already served (nothing changed).
    pub changed: bool,
    pub from: Option<Arc<T>>,
    pub to: Arc<T>,
}

impl<T> Default for VersionTable<T> {
    fn default() -> Self {
        VersionTable {
            entries: Vec::new(),
            serving: None,
            last_switch: None,
        }
    }
}

impl<T> VersionTable<T> {
    pub fn serving(&self) -> Option<&Entry<T>> {
        self.serving.as_deref().and_then(|v| self.get(v))
    }

    pub fn get(&self, version: &str) -> Option<&Entry<T>> {
        self.entries.iter().find(|e| e.version == version)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn last_switch(&self) -> Option<&SwitchView> {
        self.last_switch.as_ref()
    }

    pub fn state(&self, entry: &Entry<T>) -> VersionState {
        if self.serving.as_deref() == Some(entry.version.as_str()) {
            VersionState::Serving
        } else if entry.serving_since.is_some() {
            VersionState::Previous
        } else {
            VersionState::Staged
        }
    }

    /// Every loaded version with its state, in load order.
    pub fn entries(&self) -> impl Iterator<Item = (&Entry<T>, VersionState)> {
        self.entries.iter().map(|e| (e, self.state(e)))
    }

    /// How many versions are in `state`.
    pub fn count(&self, state: VersionState) -> usize {
        self.entries().filter(|(_, s)| *s == state).count()
    }

    /// The loaded versions for an error message: `"1" (serving), "2" (staged)`, or `none`.
    pub fn describe(&self) -> String {
        if self.entries.is_empty() {
            return "none".to_owned();
        }
        self.entries()
            .map(|(e, s)| format!("{:?} ({})", e.version, s.as_str()))
            .collect::<Vec<_>>()
            .join(", ")
    }

    pub fn not_loaded(&self) -> NotLoaded {
        NotLoaded {
            loaded: self.describe(),
        }
    }

    fn remove(&mut self, version: &str) -> Option<Entry<T>> {
        let index = self.entries.iter().position(|e| e.version == version)?;
        Some(self.entries.remove(index))
    }

    /// A load without `stage`: `version` serves at once; the version that served and any loaded version with the
    /// same label are dropped. Returns the dropped versions.
    pub fn replace_serving(&mut self, version: &str, value: Arc<T>, now: &str) -> Vec<Arc<T>> {
        let mut dropped = Vec::new();
        if let Some(old) = self.serving.take() {
            dropped.extend(self.remove(&old).map(|e| e.value));
        }
        dropped.extend(self.remove(version).map(|e| e.value));
        self.entries.push(Entry {
            version: version.to_owned(),
            value,
            loaded_at: now.to_owned(),
            serving_since: Some(now.to_owned()),
        });
        self.serving = Some(version.to_owned());
        dropped
    }

    /// A load with `stage`: `version` is loaded beside the others and does not serve. A loaded version with the
    /// same label that does not serve is replaced (and returned); the serving one is never touched.
    pub fn stage(&mut self, version: &str, value: Arc<T>, now: &str) -> Option<Arc<T>> {
        let replaced = if self.serving.as_deref() == Some(version) {
            None
        } else {
            self.remove(version).map(|e| e.value)
        };
        if self.serving.as_deref() != Some(version) {
            self.entries.push(Entry {
                version: version.to_owned(),
                value,
                loaded_at: now.to_owned(),
                serving_since: None,
            });
        }
        replaced
    }

    /// Makes the loaded `version` the serving one; the one that served becomes `previous`. Switching to the
    /// version that already serves changes nothing and describes the switch that made it serve.
    pub fn switch(&mut self, version: &str, now: &str) -> Result<Switch<T>, NotLoaded> {
        let Some(target) = self.get(version) else {
            return Err(self.not_loaded());
        };
        let to = target.value.clone();
        if self.serving.as_deref() == Some(version) {
            let (previous, at) = match &self.last_switch {
                Some(last) if last.to == version => (last.from.clone(), last.at.clone()),
                _ => (None, target.serving_since.clone().unwrap_or_default()),
            };
            return Ok(Switch {
                previous,
                at,
                changed: false,
                from: None,
                to,
            });
        }
        let previous = self.serving.replace(version.to_owned());
        let from = previous
            .as_deref()
            .and_then(|p| self.get(p))
            .map(|e| e.value.clone());
        if let Some(entry) = self.entries.iter_mut().find(|e| e.version == version) {
            entry.serving_since = Some(now.to_owned());
        }
        self.last_switch = Some(SwitchView {
            from: previous.clone(),
            to: version.to_owned(),
            at: now.to_owned(),
        });
        Ok(Switch {
            previous,
            at: now.to_owned(),
            changed: true,
            from,
            to,
        })
    }

    /// Drops `version` unless it serves: `Some` with the dropped version, `None` if it was not loaded.
    pub fn unload(&mut self, version: &str) -> Result<Option<Arc<T>>, ServingVersion> {
        if self.serving.as_deref() == Some(version) {
            return Err(ServingVersion);
        }
        Ok(self.remove(version).map(|e| e.value))
    }
}

/// `time` as RFC 3339 in UTC with milliseconds, e.g. `2026-12-02T10:21:14.123Z`.
pub fn rfc3339_millis(time: SystemTime) -> String {
    let since_epoch = time
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let seconds = since_epoch.as_secs();
    let (days, of_day) = (seconds / 86_400, seconds % 86_400);
    // Howard Hinnant's civil_from_days, for days since 1970-01-01 (never negative here).
    let z = days as i64 + 719_468;
    let era = z / 146_097;
    let day_of_era = z - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        of_day / 3600,
        of_day % 3600 / 60,
        of_day % 60,
        since_epoch.subsec_millis()
    )
}

/// The current time as `rfc3339_millis` writes it.
pub fn now() -> String {
    rfc3339_millis(SystemTime::now())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn table() -> VersionTable<&'static str> {
        let mut table = VersionTable::default();
        assert!(table.replace_serving("1", Arc::new("one"), "t1").is_empty());
        table
    }

    fn states(table: &VersionTable<&'static str>) -> Vec<(String, VersionState)> {
        table
            .entries()
            .map(|(e, s)| (e.version.clone(), s))
            .collect()
    }

    fn s(version: &str, state: VersionState) -> (String, VersionState) {
        (version.to_owned(), state)
    }

    #[test]
    fn a_stage_loads_beside_the_serving_version_and_a_switch_keeps_the_old_one_as_previous() {
        use VersionState::*;
        let mut table = table();
        assert!(table.stage("2", Arc::new("two"), "t2").is_none());
        assert_eq!(states(&table), [s("1", Serving), s("2", Staged)]);
        assert_eq!(*table.serving().unwrap().value, "one");
        assert_eq!(table.describe(), r#""1" (serving), "2" (staged)"#);

        let switch = table.switch("2", "t3").ok().unwrap();
        assert!(switch.changed);
        assert_eq!(switch.previous.as_deref(), Some("1"));
        assert_eq!(switch.at, "t3");
        assert_eq!(*switch.from.unwrap(), "one");
        assert_eq!(*switch.to, "two");
        assert_eq!(states(&table), [s("1", Previous), s("2", Serving)]);
        let last = table.last_switch().unwrap();
        assert_eq!(
            (last.from.as_deref(), last.to.as_str(), last.at.as_str()),
            (Some("1"), "2", "t3")
        );

        // A retried switch changes nothing and answers as the switch that made it serve.
        let again = table.switch("2", "t4").ok().unwrap();
        assert!(!again.changed);
        assert_eq!(
            (again.previous.as_deref(), again.at.as_str()),
            (Some("1"), "t3")
        );
        assert_eq!(table.last_switch().unwrap().at, "t3");

        // Rollback is a switch back.
        let back = table.switch("1", "t5").ok().unwrap();
        assert_eq!(back.previous.as_deref(), Some("2"));
        assert_eq!(states(&table), [s("1", Serving), s("2", Previous)]);
        assert_eq!(table.count(Previous), 1);
    }

    #[test]
    fn a_switch_to_a_version_not_loaded_names_the_loaded_ones_and_changes_nothing() {
        let mut table = table();
        let error = table.switch("9", "t2").err().unwrap();
        assert_eq!(error.loaded, r#""1" (serving)"#);
        assert_eq!(states(&table), [s("1", VersionState::Serving)]);
        assert!(table.last_switch().is_none());
        // The version that served from the start: no previous, the time it started serving.
        let same = table.switch("1", "t3").ok().unwrap();
        assert!(!same.changed);
        assert_eq!((same.previous, same.at.as_str()), (None, "t1"));
        assert_eq!(VersionTable::<()>::default().describe(), "none");
    }

    #[test]
    fn unload_drops_what_does_not_serve_and_is_idempotent() {
        use VersionState::*;
        let mut table = table();
        table.stage("2", Arc::new("two"), "t2");
        assert_eq!(table.unload("1"), Err(ServingVersion));
        assert_eq!(table.unload("2").unwrap().map(|v| *v), Some("two"));
        assert_eq!(table.unload("2").unwrap(), None);
        assert_eq!(states(&table), [s("1", Serving)]);
        table.stage("2", Arc::new("two"), "t3");
        table.switch("2", "t4").ok().unwrap();
        assert_eq!(table.unload("1").unwrap().map(|v| *v), Some("one"));
        assert_eq!(states(&table), [s("2", Serving)]);
        assert_eq!(table.len(), 1);
    }

    #[test]
    fn a_load_without_stage_replaces_the_serving_version_and_keeps_the_others() {
        use VersionState::*;
        let mut table = table();
        table.stage("2", Arc::new("two"), "t2");
        let dropped = table.replace_serving("3", Arc::new("three"), "t3");
        assert_eq!(dropped.iter().map(|v| **v).collect::<Vec<_>>(), ["one"]);
        assert_eq!(states(&table), [s("2", Staged), s("3", Serving)]);
        // Replacing with a label that is loaded drops that copy too.
        let dropped = table.replace_serving("2", Arc::new("two again"), "t4");
        assert_eq!(
            dropped.iter().map(|v| **v).collect::<Vec<_>>(),
            ["three", "two"]
        );
        assert_eq!(states(&table), [s("2", Serving)]);
        assert_eq!(*table.serving().unwrap().value, "two again");
        assert!(table.last_switch().is_none(), "a hot swap is not a switch");
    }

    #[test]
    fn a_stage_never_touches_the_serving_version() {
        let mut table = table();
        assert!(table.stage("1", Arc::new("other one"), "t2").is_none());
        assert_eq!(*table.serving().unwrap().value, "one");
        assert_eq!(table.len(), 1);
        table.stage("2", Arc::new("two"), "t3");
        let replaced = table.stage("2", Arc::new("two again"), "t4");
        assert_eq!(replaced.map(|v| *v), Some("two"));
        assert_eq!(*table.get("2").unwrap().value, "two again");
        assert_eq!(table.len(), 2);
    }

    #[test]
    fn timestamps_are_rfc3339_utc_with_milliseconds() {
        let at = |seconds: u64, millis: u64| {
            rfc3339_millis(
                SystemTime::UNIX_EPOCH
                    + Duration::from_secs(seconds)
                    + Duration::from_millis(millis),
            )
        };
        assert_eq!(at(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(at(951_782_400, 7), "2000-02-29T00:00:00.007Z");
        assert_eq!(at(1_798_201_274, 123), "2026-12-25T12:21:14.123Z");
        assert_eq!(at(4_107_542_399, 999), "2100-02-28T23:59:59.999Z");
        assert_eq!(now().len(), "1970-01-01T00:00:00.000Z".len());
    }
}
