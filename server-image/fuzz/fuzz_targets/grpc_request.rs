#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = ferry_server::fuzzing::grpc_request(data);
});
