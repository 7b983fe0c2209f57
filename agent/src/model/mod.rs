//! What bootenv reads and writes, parsed and checked: validated names, the on-pool layout and
//! its public property names, the kernel command line, a dataset listing, the inventory of
//! boot environments read from it and the index that keeps it between commands, the data pools a system pool names, the state record, the boot report, and the kinds of failure
//! a verb reports.

pub mod cmdline;
pub mod datapools;
pub mod failure;
pub mod index;
pub mod inventory;
pub mod layout;
pub mod listing;
pub mod names;
pub mod paths;
pub mod report;
pub mod state;
