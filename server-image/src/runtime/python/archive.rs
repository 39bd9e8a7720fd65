//! Unpacking a model archive (`.tar.gz`, `.tar`, `.zip`) into a directory of its own, refusing anything that
//! would land outside it.
//!
//! Every member's path is checked before it is written: absolute paths, `..` components, hard links, links whose
//! target leaves the directory, and devices, FIFOs and sockets are refused with the member's name. The unpacked
//! total and the member count are bounded, so a small archive cannot fill the disk. The kind of archive is told
//! by its first bytes, not by the URI.

use std::fs;
use std::io::{BufRead, BufReader, Read, Seek};
use std::path::{Component, Path, PathBuf};

/// At most this many members.
pub const MAX_MEMBERS: usize = 100_000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArchiveError {
    /// A member that would escape the directory, a kind of member that is refused, or too much unpacked data.
    #[error("{0}")]
    Unsafe(String),
    /// Not an archive, or a damaged one.
    #[error("{0}")]
    Corrupt(String),
    #[error("cannot unpack: {0}")]
    Io(String),
}

/// Unpacks the archive at `archive` into `into` (created, and expected empty), writing at most `max_bytes`.
pub fn unpack(archive: &Path, into: &Path, max_bytes: u64) -> Result<(), ArchiveError> {
    let io = |e: std::io::Error| ArchiveError::Io(e.to_string());
    fs::create_dir_all(into).map_err(io)?;
    let mut file = BufReader::new(fs::File::open(archive).map_err(io)?);
    let head = file.fill_buf().map_err(io)?.to_vec();
    if head.starts_with(b"PK\x03\x04") || head.starts_with(b"PK\x05\x06") {
        return unzip(file, into, max_bytes);
    }
    if head.starts_with(&[0x1f, 0x8b]) {
        return untar(flate2::bufread::GzDecoder::new(file), into, max_bytes);
    }
    if head.len() >= 262 && &head[257..262] == b"ustar" {
        return untar(file, into, max_bytes);
    }
    Err(ArchiveError::Corrupt(
        "the model is not a .tar.gz, .tar or .zip archive".to_owned(),
    ))
}

/// The path `name` names inside `root`, or why it may not be written.
fn inside(root: &Path, name: &Path) -> Result<PathBuf, ArchiveError> {
    let mut path = root.to_path_buf();
    for component in name.components() {
        match component {
            Component::Normal(part) => path.push(part),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => {
                return Err(ArchiveError::Unsafe(format!(
                    "the archive member {} would be written outside the model's directory",
                    name.display()
                )))
            }
        }
    }
    Ok(path)
}

/// Whether a link at `member` pointing at `target` stays inside the archive's directory.
fn link_stays_inside(member: &Path, target: &Path) -> bool {
    if target.is_absolute() {
        return false;
    }
    let mut depth: i64 = member.components().count() as i64 - 1;
    for component in target.components() {
        match component {
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            Component::ParentDir => {
                depth -= 1;
                if depth < 0 {
                    return false;
                }
            }
            Component::RootDir | Component::Prefix(_) => return false,
        }
    }
    true
}

struct Budget {
    left: u64,
    limit: u64,
    members: usize,
}

impl Budget {
    fn member(&mut self) -> Result<(), ArchiveError> {
        self.members += 1;
        if self.members > MAX_MEMBERS {
            return Err(ArchiveError::Unsafe(format!(
                "the archive has more than {MAX_MEMBERS} members"
            )));
        }
        Ok(())
    }

    /// Copies `from` into a new file at `to`, counting against the budget.
    fn write(&mut self, from: &mut dyn Read, to: &Path, name: &Path) -> Result<(), ArchiveError> {
        let io = |e: std::io::Error| ArchiveError::Io(format!("{}: {e}", name.display()));
        if let Some(parent) = to.parent() {
            fs::create_dir_all(parent).map_err(io)?;
        }
        let mut out = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(to)
            .map_err(io)?;
        let copied = std::io::copy(&mut from.take(self.left + 1), &mut out).map_err(io)?;
        if copied > self.left {
            return Err(ArchiveError::Unsafe(format!(
                "the archive unpacks to more than {} bytes (at {})",
                self.limit,
                name.display()
            )));
        }
        self.left -= copied;
        Ok(())
    }
}

fn untar(reader: impl Read, into: &Path, max_bytes: u64) -> Result<(), ArchiveError> {
    let corrupt =
        |e: std::io::Error| ArchiveError::Corrupt(format!("the tar archive is damaged: {e}"));
    let mut archive = tar::Archive::new(reader);
    let mut budget = Budget {
        left: max_bytes,
        limit: max_bytes,
        members: 0,
    };
    let mut links = Vec::new();
    for entry in archive.entries().map_err(corrupt)? {
        let mut entry = entry.map_err(corrupt)?;
        budget.member()?;
        let name = entry.path().map_err(corrupt)?.into_owned();
        let path = inside(into, &name)?;
        let kind = entry.header().entry_type();
        if kind.is_dir() {
            fs::create_dir_all(&path).map_err(|e| ArchiveError::Io(e.to_string()))?;
        } else if kind.is_file() || kind == tar::EntryType::Continuous {
            budget.write(&mut entry, &path, &name)?;
        } else if kind.is_symlink() {
            let target = entry
                .link_name()
                .map_err(corrupt)?
                .map(|t| t.into_owned())
                .unwrap_or_default();
            if !link_stays_inside(&name, &target) {
                return Err(ArchiveError::Unsafe(format!(
                    "the archive member {} is a link to {}, outside the model's directory",
                    name.display(),
                    target.display()
                )));
            }
            // Made after every file, so no later member is written through a link.
            links.push((path, target));
        } else if kind.is_pax_global_extensions()
            || kind.is_pax_local_extensions()
            || kind.is_gnu_longname()
            || kind.is_gnu_longlink()
        {
            continue;
        } else {
            return Err(ArchiveError::Unsafe(format!(
                "the archive member {} is a {} (only files, directories and links inside are allowed)",
                name.display(),
                kind_name(kind)
            )));
        }
    }
    for (path, target) in links {
        std::os::unix::fs::symlink(&target, &path)
            .map_err(|e| ArchiveError::Io(format!("{}: {e}", path.display())))?;
    }
    Ok(())
}

fn kind_name(kind: tar::EntryType) -> &'static str {
    if kind.is_hard_link() {
        "hard link"
    } else if kind.is_character_special() || kind.is_block_special() {
        "device"
    } else if kind.is_fifo() {
        "FIFO"
    } else {
        "member of another kind"
    }
}

fn unzip(reader: impl Read + Seek, into: &Path, max_bytes: u64) -> Result<(), ArchiveError> {
    let corrupt = |e: zip::result::ZipError| {
        ArchiveError::Corrupt(format!("the zip archive is damaged: {e}"))
    };
    let mut archive = zip::ZipArchive::new(reader).map_err(corrupt)?;
    let mut budget = Budget {
        left: max_bytes,
        limit: max_bytes,
        members: 0,
    };
    for index in 0..archive.len() {
        let mut file = archive.by_index(index).map_err(corrupt)?;
        budget.member()?;
        let name = PathBuf::from(file.name());
        let path = inside(into, &name)?;
        if file.is_symlink() {
            return Err(ArchiveError::Unsafe(format!(
                "the archive member {} is a link (zip archives may hold only files and directories)",
                name.display()
            )));
        }
        if file.is_dir() {
            fs::create_dir_all(&path).map_err(|e| ArchiveError::Io(e.to_string()))?;
        } else {
            budget.write(&mut file, &path, &name)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn testdata(file: &str) -> PathBuf {
        Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/testdata/python/models"
        ))
        .join(file)
    }

    #[test]
    fn a_model_archive_unpacks_into_its_directory() {
        let dir = tempfile::tempdir().unwrap();
        let into = dir.path().join("model");
        unpack(&testdata("mlflow_sklearn.tar.gz"), &into, 1 << 20).unwrap();
        assert!(into.join("MLmodel").is_file());
        assert!(into.join("model.pkl").is_file());
    }

    #[test]
    fn members_climbing_out_are_refused_and_nothing_lands_outside() {
        for archive in ["zip_slip.tar.gz", "zip_slip.zip"] {
            let dir = tempfile::tempdir().unwrap();
            let into = dir.path().join("a").join("b");
            let error = unpack(&testdata(archive), &into, 1 << 20).unwrap_err();
            assert!(
                matches!(&error, ArchiveError::Unsafe(m) if m.contains("../../escaped.txt") && m.contains("outside")),
                "{archive}: {error:?}"
            );
            assert!(!dir.path().join("escaped.txt").exists(), "{archive}");
        }
    }

    #[test]
    fn a_link_pointing_outside_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let error = unpack(&testdata("link_out.tar.gz"), dir.path(), 1 << 20).unwrap_err();
        assert!(
            matches!(&error, ArchiveError::Unsafe(m) if m.contains("weights.npy") && m.contains("/etc/passwd")),
            "{error:?}"
        );
    }

    #[test]
    fn links_inside_the_directory_are_kept() {
        assert!(link_stays_inside(Path::new("a/b"), Path::new("../c")));
        assert!(link_stays_inside(Path::new("a"), Path::new("b/c")));
        assert!(!link_stays_inside(Path::new("a"), Path::new("../c")));
        assert!(!link_stays_inside(
            Path::new("a/b"),
            Path::new("/etc/passwd")
        ));
    }

    #[test]
    fn the_unpacked_size_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let error = unpack(&testdata("mlflow_sklearn.tar.gz"), dir.path(), 100).unwrap_err();
        assert!(
            matches!(&error, ArchiveError::Unsafe(m) if m.contains("more than 100 bytes")),
            "{error:?}"
        );
    }

    #[test]
    fn a_file_that_is_no_archive_is_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let error = unpack(&testdata("lightgbm_binary.txt"), dir.path(), 1 << 20).unwrap_err();
        assert!(matches!(error, ArchiveError::Corrupt(_)), "{error:?}");
    }
}
