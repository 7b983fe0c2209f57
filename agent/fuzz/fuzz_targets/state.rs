//! The state record as read from the state dataset: any bytes, and any bytes framed with a
//! valid magic, length and checksum (so that the payload decoder is reached).
#![no_main]
use bootenv::model::state::{decode, encode, Loaded};
use libfuzzer_sys::fuzz_target;

fn check(bytes: &[u8]) {
    if let Loaded::Valid(s) = decode(bytes) {
        // What was read is bounded and written back as it was read.
        let again = encode(&s);
        assert!(again.len() <= bootenv::model::state::MAX_RECORD);
        match decode(&again) {
            Loaded::Valid(t) => assert_eq!(t, s),
            other => panic!("re-encoded record does not decode: {other:?}"),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    check(data);
    // The same bytes as a payload inside a valid frame of the current version.
    let mut framed = bootenv::model::state::MAGIC.to_vec();
    framed.extend_from_slice(&bootenv::model::state::VERSION.to_le_bytes());
    framed.extend_from_slice(&(data.len() as u32).to_le_bytes());
    framed.extend_from_slice(data);
    let crc = crc32fast::hash(&framed);
    framed.extend_from_slice(&crc.to_le_bytes());
    check(&framed);
});

