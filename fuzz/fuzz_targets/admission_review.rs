//! AdmissionReview decoder and every admission decision: any bytes, no panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    bulkhead::admission::fuzzing::exercise(data);
});
