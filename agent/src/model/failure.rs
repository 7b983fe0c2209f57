//! Why a verb did not do what it was asked, as a stable kind: what `--json` prints as
//! `error.kind` (a public interface, ARCHITECTURE.md "JSON output") and what callers branch on
//! instead of an error's text.
//!
//! A verb that refuses raises a [`Failure`] with its kind and the sentence that names the fix;
//! an error raised elsewhere (a ZFS command, a file) is of kind [`ErrorKind::Failed`] unless one
//! of the typed errors in its chain says otherwise (see `verbs::outcome::kind_of`).

use serde::Serialize;

/// The kinds of failure, version 1. Kinds are only ever added.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorKind {
    /// The command line is wrong: unknown verb or option, missing argument (exit status 2).
    Usage,
    /// An argument's value is not acceptable (a name, a number of tries, a path, a label).
    Invalid,
    /// No such boot environment, snapshot, pool or mount.
    NotFound,
    /// The name is taken (or differs from a taken one only in case), or what an interrupted
    /// run left holds it.
    Exists,
    /// The verb will not do this now: the BE is running, the default, on trial, the last
    /// known-good or has a reset pending; there is nothing to roll back to; a reset has begun.
    Refused,
    /// The boot environment cannot boot (the message says why and how to fix it).
    CannotBoot,
    /// The verb needs a system booted by bootenv's agent (`status`, `mark-good` without a name).
    NotBootedByBootenv,
    /// The verb needs GRUB managed by bootenv, and the pool's disks have no ESP.
    NoEsp,
    /// The state record has a newer format than this bootenv reads.
    StateNewer,
    /// Another bootenv command holds the writers' lock.
    Busy,
    /// `sync-boot`: some boot environments have no kernel (the others were synced).
    KernelsMissing,
    /// `upgrade`: the command failed in the new boot environment, which was removed.
    CommandFailed,
    /// A step failed (ZFS, a mount, a file); the message says which.
    Failed,
    /// `data-pools import`: a data pool is missing or could not be imported (the others were);
    /// the message names each one and its fix.
    Unavailable,
}

impl ErrorKind {
    /// Its name in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Usage => "usage",
            ErrorKind::Invalid => "invalid",
            ErrorKind::NotFound => "not-found",
            ErrorKind::Exists => "exists",
            ErrorKind::Refused => "refused",
            ErrorKind::CannotBoot => "cannot-boot",
            ErrorKind::NotBootedByBootenv => "not-booted-by-bootenv",
            ErrorKind::NoEsp => "no-esp",
            ErrorKind::StateNewer => "state-newer",
            ErrorKind::Busy => "busy",
            ErrorKind::KernelsMissing => "kernels-missing",
            ErrorKind::CommandFailed => "command-failed",
            ErrorKind::Failed => "failed",
            ErrorKind::Unavailable => "unavailable",
        }
    }

    /// Every kind, for the documentation's test.
    pub const ALL: [ErrorKind; 14] = [
        ErrorKind::Usage,
        ErrorKind::Invalid,
        ErrorKind::NotFound,
        ErrorKind::Exists,
        ErrorKind::Refused,
        ErrorKind::CannotBoot,
        ErrorKind::NotBootedByBootenv,
        ErrorKind::NoEsp,
        ErrorKind::StateNewer,
        ErrorKind::Busy,
        ErrorKind::KernelsMissing,
        ErrorKind::CommandFailed,
        ErrorKind::Failed,
        ErrorKind::Unavailable,
    ];
}

/// A failure of a known kind, with the sentence for the operator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// What kind.
    pub kind: ErrorKind,
    /// What happened and what to do about it.
    pub message: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {}

/// A [`Failure`] as an error to return.
pub fn fail(kind: ErrorKind, message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Failure {
        kind,
        message: message.into(),
    })
}

/// Returns early with a [`Failure`]: `refuse!(Refused, "...", args)`.
#[macro_export]
macro_rules! refuse {
    ($kind:ident, $($fmt:tt)+) => {
        return Err($crate::model::failure::fail(
            $crate::model::failure::ErrorKind::$kind,
            format!($($fmt)+),
        ))
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_serializes_as_its_documented_name() {
        for k in ErrorKind::ALL {
            assert_eq!(
                serde_json::to_value(k).unwrap(),
                serde_json::json!(k.as_str())
            );
        }
    }
}
