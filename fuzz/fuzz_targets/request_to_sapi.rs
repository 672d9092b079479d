#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tokio_php::fuzz::request_to_sapi(data));
