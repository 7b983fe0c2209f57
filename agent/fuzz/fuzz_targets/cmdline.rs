//! The kernel command line as the agent reads it from `/proc/cmdline`: any bytes. Checks,
//! besides "no panic", that the agent reads the `bootenv=` the kernel's splitting leaves it
//! (the last one before `--`) whenever it names a valid BE, whatever surrounds it; and the same
//! for the input with such a key appended.
#![no_main]
use bootenv::model::cmdline::{split, BootArgs};
use libfuzzer_sys::fuzz_target;

fn check(line: &[u8]) {
    let args = BootArgs::parse(line);
    let (kernel, _) = split(line);
    let last = kernel
        .iter()
        .rev()
        .find(|a| a.key == b"bootenv" && a.value.is_some());
    if let Some(v) = last.and_then(|a| a.value.as_deref()) {
        if let Ok(s) = std::str::from_utf8(v) {
            if bootenv::model::names::BeName::new(s).is_ok() {
                assert_eq!(args.be.as_ref().map(|b| b.as_str()), Some(s), "{line:?}");
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    check(data);
    let mut line = data.to_vec();
    line.extend_from_slice(b" bootenv=zz9");
    check(&line);
});
