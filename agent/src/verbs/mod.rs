//! What the operator's commands do. Every verb is a method of the per-run context
//! ([`context::Ctx`]) and returns its typed outcome ([`outcome`]), which the CLI prints as text
//! or JSON (keys checked by [`schema`]): the verbs that only look ([`show`]: `status`, `list`,
//! `grub-menu`), the verbs around boot ([`ops`]: `prepare-pool`, `create`, `activate`,
//! `mark-good`, `sync-boot`, `factory-reset`), the life of a boot environment after it exists
//! ([`lifecycle`]), laying out a blank disk ([`install`]), the data pools ([`data`]), and comparing two trees for `diff`
//! ([`treediff`]).

pub mod context;
pub mod data;
pub mod install;
pub mod lifecycle;
pub mod ops;
pub mod outcome;
pub mod schema;
pub mod show;
pub mod treediff;
