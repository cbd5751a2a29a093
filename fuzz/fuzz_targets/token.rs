#![no_main]

libfuzzer_sys::fuzz_target!(init: tandem_fuzz::quiet_caught_panics(), |data: &[u8]| {
    tandem_fuzz::run(tandem_fuzz::token, data)
});
