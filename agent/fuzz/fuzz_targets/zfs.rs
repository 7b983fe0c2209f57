//! What the ZFS tools print, as the agent reads it: `zfs list -H -p` output (property values
//! may hold any byte), a `zpool import` scan and an import's error text. The listing goes on
//! into the inventory of boot environments, as at boot: every BE it keeps is a dataset of the
//! listing under the pool's ROOT, and no two of them share a directory on the FAT ESP.
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
    for (i, be) in inv.bes.iter().enumerate() {
        // Every BE is a dataset of the listing under the pool's ROOT, named as its dataset.
        assert_eq!(be.dataset, format!("tank/ROOT/{}", be.name));
        assert!(listing.datasets.iter().any(|d| d.name == be.dataset));
        // No two BEs share a directory on the FAT ESP (names equal but for ASCII case).
        for other in &inv.bes[i + 1..] {
            assert!(
                !be.name.as_str().eq_ignore_ascii_case(other.name.as_str()),
                "{} and {} both kept",
                be.name,
                other.name
            );
        }
        let _ = bootenv::bootloader::grub::safe_title(be.label.as_deref().unwrap_or(""));
        let _ = bootenv::bootloader::bootfiles::menu_problem(be);
    }
    let _ = parse_scan(&text);
    let _ = classify_import_error(&text);
});
