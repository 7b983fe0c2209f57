//! What the operator's commands do: the verbs around boot (`status`, `list`, `activate`,
//! `mark-good`, `sync-boot`, ... in [`ops`], with the per-run context [`ops::Ctx`]), the life of
//! a boot environment after it exists ([`lifecycle`]), laying out a blank disk ([`install`]),
//! comparing two trees for `diff` ([`treediff`]), and what each verb returns
//! ([`outcome`]), which the CLI prints as text or JSON.

pub mod install;
pub mod lifecycle;
pub mod ops;
pub mod outcome;
pub mod schema;
pub mod treediff;
