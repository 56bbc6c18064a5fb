//! File helpers shared by the shells: the standalone state folder and the kept TLS CA both
//! write secrets to disk, and neither shell should import the other to do it.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// A file that could not be written.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {source}")]
pub struct FileError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

fn err(path: &Path) -> impl FnOnce(std::io::Error) -> FileError + '_ {
    move |source| FileError { path: path.to_owned(), source }
}

/// Writes `bytes` to `path` with mode 0600, atomically: a temporary file beside it, fsync,
/// then rename, so a crash never leaves half a key and no other user can read it at any time.
/// Creates the parent folder when missing.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), FileError> {
    let dir = path
        .parent()
        .ok_or_else(|| err(path)(std::io::Error::new(std::io::ErrorKind::InvalidInput, "no parent folder")))?;
    std::fs::create_dir_all(dir).map_err(err(dir))?;
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(err(&tmp))?;
    file.write_all(bytes).map_err(err(&tmp))?;
    file.sync_all().map_err(err(&tmp))?;
    std::fs::rename(&tmp, path).map_err(err(path))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn writes_private_files_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("secret.key");
        write_private(&path, b"first").unwrap();
        write_private(&path, b"second").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"second");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(!path.with_extension("tmp").exists(), "the temporary file is renamed away");
    }

    #[test]
    fn a_failed_write_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        // The parent is a regular file: the folder cannot be made.
        let blocker = dir.path().join("blocker");
        std::fs::write(&blocker, b"").unwrap();
        let e = write_private(&blocker.join("secret.key"), b"x").unwrap_err();
        assert_eq!(e.path, blocker);
    }
}
