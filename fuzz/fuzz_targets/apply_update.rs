#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tandem_fuzz::apply_update(data));
