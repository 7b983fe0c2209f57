//! What the ZFS tools print, as the agent reads it: `zfs list -H -p` output (property values
//! may hold any byte), a `zpool import` scan and an import's error text. The listing goes on
//! into the inventory of boot environments, as at boot.
#![no_main]
use bootenv::model::inventory::Inventory;
use bootenv::model::names::PoolName;
use bootenv::sys::zfs::{classify_import_error, parse_list, parse_scan};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let listing = parse_list(&text);
    let pool = PoolName::new("tank").expect("valid");
    let inv = Inventory::from_listing(&pool, &listing, Some("tank/ROOT/v1".into()));
    for be in &inv.bes {
        assert!(be.dataset.starts_with("tank/ROOT/"), "{}", be.dataset);
        if let Some(c) = &be.cmdline {
            // Whatever is kept for a kernel line passed the menu's check.
            if be.unbootable.is_none() {
                let _ = bootenv::bootloader::grub::check_cmdline(c);
            }
        }
        let _ = bootenv::bootloader::grub::safe_title(be.label.as_deref().unwrap_or(""));
    }
    let _ = parse_scan(&text);
    let _ = classify_import_error(&text);
});
