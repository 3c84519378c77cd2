//! The run folder's lock: `ril.lock`, held with an OS advisory lock (`flock`) for the whole run,
//! so a second `ril train` on the same folder is refused naming the holder's pid, and a killed
//! process never leaves the folder locked (the kernel drops its lock with the process; the file
//! itself stays and means nothing then).

use std::fs::{File, OpenOptions, TryLockError};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

/// The lock file's name in a run folder.
pub const LOCK_FILE: &str = "ril.lock";

/// A held lock on a run folder; dropping it (or the process ending) releases it.
#[derive(Debug)]
pub struct RunLock {
    _file: Option<File>,
    path: PathBuf,
}

impl RunLock {
    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Takes the lock of the existing folder `dir` and writes this process's pid into its lock file.
/// Held by another process: an error naming the folder and that process's pid. On a file system
/// without advisory locks the run goes on unlocked, with a warning.
pub fn lock_run_dir(dir: &Path) -> Result<RunLock> {
    let path = dir.join(LOCK_FILE);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("cannot open the lock file {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            let holder = std::fs::read_to_string(&path)
                .ok()
                .and_then(|t| t.trim().parse::<u32>().ok())
                .map_or("unknown".to_string(), |p| p.to_string());
            bail!(
                "run folder {} is in use by another ril train (pid {holder}, which holds {}); wait for it to end or stop it, or choose another output folder",
                dir.display(),
                path.display()
            );
        }
        Err(TryLockError::Error(e)) if e.kind() == std::io::ErrorKind::Unsupported => {
            eprintln!(
                "warning: {} cannot be locked on this file system ({e}); nothing stops a second run on {}",
                path.display(),
                dir.display()
            );
            return Ok(RunLock { _file: None, path });
        }
        Err(TryLockError::Error(e)) => {
            return Err(e).with_context(|| format!("cannot lock {}", path.display()));
        }
    }
    file.set_len(0)
        .and_then(|()| file.write_all(format!("{}\n", std::process::id()).as_bytes()))
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(RunLock {
        _file: Some(file),
        path,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_lock_refuses_a_second_naming_folder_and_pid_and_a_released_one_does_not() {
        let dir = std::env::temp_dir().join(format!("rid-lock-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let first = lock_run_dir(&dir).unwrap();
        // flock locks belong to the open file, so a second open in this process conflicts as a
        // second process would.
        let e = format!("{:#}", lock_run_dir(&dir).unwrap_err());
        assert!(e.contains(&dir.display().to_string()), "{e}");
        assert!(e.contains(&format!("pid {}", std::process::id())), "{e}");
        drop(first);
        // The file stays, with the pid of a holder that is gone: it does not block.
        assert!(dir.join(LOCK_FILE).is_file());
        let again = lock_run_dir(&dir).unwrap();
        assert_eq!(again.path(), dir.join(LOCK_FILE));
        drop(again);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
