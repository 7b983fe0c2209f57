//! The boot report in `/run/bootenv/boot`, as `bootenv status` reads it: any text.
#![no_main]
use bootenv::model::report::Report;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let r = Report::parse(&text);
    let _ = r.map();
    let _ = r.fallback_sentence();
    // What it renders reads back as the same report when no value holds a line break.
    if !text.contains(['\r', '\u{b}', '\u{c}', '\u{85}', '\u{2028}', '\u{2029}']) {
        assert_eq!(Report::parse(&r.render()), r);
    }
});
