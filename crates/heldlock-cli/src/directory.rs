//! The lock's directory, checked (and with `--mkdir` created) by `run`
//! before it tries the lock, so that a typo in a path is an error that says
//! so rather than a tree of directories made on the way; the library itself
//! still creates missing directories for its other users.

use std::fs;
use std::io;
use std::path::Path;

use crate::exit::CliError;

/// Makes sure the directory of the lock `path` exists: creates it and its
/// missing parents when `mkdir`, else fails saying to pass `--mkdir`.
///
/// # Errors
///
/// [`CliError::Directory`] (exit 1) when the directory is missing without
/// `mkdir`, when it or one of its ancestors is not a directory, or when it
/// cannot be looked at or made.
pub(crate) fn prepare(path: &Path, mkdir: bool) -> Result<(), CliError> {
    let dir = match path.parent() {
        // A bare file name: the current directory, which exists.
        Some(dir) if dir.as_os_str().is_empty() => return Ok(()),
        Some(dir) => dir,
        None => return Ok(()),
    };
    let shown = dir.display();
    let lock = path.display();
    match fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => return Ok(()),
        Ok(_) => {
            return Err(CliError::Directory(format!(
                "cannot use the lock {lock}: {shown} is not a directory"
            )));
        }
        Err(error) if is_missing(&error) => {}
        Err(error) => {
            return Err(CliError::Directory(format!(
                "cannot use the lock {lock}: cannot look at its directory {shown}: {}",
                plain(&error)
            )));
        }
    }
    // Something on the way may be a file: say which, whatever `mkdir`.
    if let Some(file) = dir
        .ancestors()
        .skip(1)
        .find(|ancestor| fs::metadata(ancestor).is_ok_and(|meta| !meta.is_dir()))
    {
        return Err(CliError::Directory(format!(
            "cannot use the lock {lock}: {} is not a directory",
            file.display()
        )));
    }
    if !mkdir {
        return Err(CliError::Directory(format!(
            "cannot use the lock {lock}: its directory {shown} does not exist; create it, or \
             pass --mkdir to have heldlock create it"
        )));
    }
    fs::create_dir_all(dir).map_err(|error| {
        CliError::Directory(format!(
            "cannot create the lock's directory {shown} (--mkdir): {}",
            plain(&error)
        ))
    })
}

/// Whether `error` says that the path does not exist, or that a component
/// of it is not a directory (looked at separately).
fn is_missing(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
    )
}

/// `error` without its `(os error N)` suffix, and with "File exists" said
/// as what it means here.
fn plain(error: &io::Error) -> String {
    match error.kind() {
        io::ErrorKind::AlreadyExists | io::ErrorKind::NotADirectory => {
            "a file stands where a directory should be (not a directory)".to_owned()
        }
        _ => {
            let text = error.to_string();
            match text.find(" (os error") {
                Some(end) => text[..end].to_owned(),
                None => text,
            }
        }
    }
}
