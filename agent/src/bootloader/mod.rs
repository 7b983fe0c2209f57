//! The boot loader's side: GRUB's menu script and a model of what it does ([`grub`]), GRUB's
//! environment block ([`grubenv`]), finding and mounting the ESP ([`esp`]), and bootenv's files
//! on it: the kernel store, each BE's entry, the menu, pruning ([`bootfiles`]).

pub mod bootfiles;
pub mod esp;
pub mod grub;
pub mod grubenv;
