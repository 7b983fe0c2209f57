//! GRUB's environment block as read from the ESP: any bytes. A block that parses renders back
//! to the same size and parses to the same block. Short inputs are also tried padded with `#`
//! to 1024 bytes, as `grub-editenv` pads.
#![no_main]
use bootenv::bootloader::grubenv::EnvBlock;
use libfuzzer_sys::fuzz_target;

fn check(data: &[u8]) {
    if let Ok(b) = EnvBlock::parse(data) {
        let out = b.render();
        assert_eq!(out.len(), data.len());
        let again = EnvBlock::parse(&out).expect("a rendered block parses");
        assert_eq!(again, b);
        for (k, v) in b.vars() {
            assert_eq!(b.get(k), Some(v));
        }
    }
}

fuzz_target!(|data: &[u8]| {
    check(data);
    // Blocks are at least 1024 bytes: the input padded as grub-editenv pads, so that short
    // inputs reach the parser too.
    if data.len() < 1024 {
        let mut padded = data.to_vec();
        padded.resize(1024, b'#');
        check(&padded);
    }
});
