#![no_main]
//! See `rollback_core::fuzzing::redis_snapshot`.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| rollback_core::fuzzing::redis_snapshot(data));
