//! What bootenv reads and writes, parsed and checked: validated names, the on-pool layout and
//! its public property names, the kernel command line, a dataset listing and the inventory of
//! boot environments read from it, the state record and the boot report.

pub mod cmdline;
pub mod inventory;
pub mod layout;
pub mod listing;
pub mod names;
pub mod report;
pub mod state;
