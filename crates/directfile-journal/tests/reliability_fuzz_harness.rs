//! Deterministic, stable-Rust runs of the cargo-fuzz targets' bodies (`fuzz/bodies.rs`): the
//! record decoder and the recovery scan, on seeded random inputs, including valid batches with
//! random mutations so the accepting paths are reached. `cargo fuzz` (nightly) runs the same
//! bodies under libFuzzer; see RELIABILITY.md.
//!
//! `FUZZ_HARNESS_ITERATIONS=1000000 cargo test -p directfile-journal --release --test reliability_fuzz_harness`

#[path = "../../../fuzz/bodies.rs"]
mod bodies;

use directfile_journal::format::{self, SegmentHeader};
use directfile_journal::storage::CrashRng;

fn iterations() -> u64 {
    std::env::var("FUZZ_HARNESS_ITERATIONS")
        .map(|v| v.parse().expect("FUZZ_HARNESS_ITERATIONS is a number"))
        .unwrap_or(30_000)
}

fn random_bytes(rng: &mut CrashRng, len: usize) -> Vec<u8> {
    (0..len).map(|_| rng.next_u64() as u8).collect()
}

/// A valid batch input for `bodies::decode_batch` (8 seed bytes, then the batch), mutated in
/// 0 to 3 random bytes.
fn mutated_batch(rng: &mut CrashRng) -> Vec<u8> {
    let seed = random_bytes(rng, 8);
    // Mirror of the body's seed decoding, to encode a batch it will accept before mutation.
    let block = 512u32 << (seed[0] % 4);
    let segment = SegmentHeader {
        block_bytes: block,
        segment_number: u64::from(seed[1] % 4),
        generation: u64::from(seed[2] % 4),
        first_lsn: 1 + u64::from(seed[3] % 8),
        batch_bytes_max: block * (1 + u32::from(seed[4] % 8)),
        batches_in_flight_max: 1 + u32::from(seed[5] % 4),
        truncates: seed[5] & 0x80 != 0,
    };
    let lsn = segment.first_lsn + u64::from(seed[6] % 4);
    let count = 1 + rng.below(6) as usize;
    let payloads: Vec<Vec<u8>> = (0..count)
        .map(|_| {
            let len = rng.below(block as u64 / 8) as usize;
            random_bytes(rng, len)
        })
        .collect();
    let refs: Vec<&[u8]> = payloads.iter().map(|p| p.as_slice()).collect();
    let mut out = vec![0u8; segment.batch_bytes_max as usize * 2];
    let padded = format::encode_batch(&mut out, &segment, lsn, &refs);
    out.truncate(padded + rng.below(64) as usize);
    for _ in 0..rng.below(4) {
        let at = rng.below(out.len() as u64) as usize;
        out[at] ^= 1 << rng.below(8);
    }
    let mut input = seed;
    input.extend_from_slice(&out);
    input
}

#[test]
fn decode_batch_target_on_random_and_mutated_inputs() {
    let mut rng = CrashRng::new(11);
    for _ in 0..iterations() {
        let input = if rng.below(2) == 0 {
            let len = rng.below(5000) as usize;
            random_bytes(&mut rng, len)
        } else {
            mutated_batch(&mut rng)
        };
        bodies::decode_batch(&input);
    }
}

#[test]
fn recovery_scan_target_on_random_and_patched_journals() {
    let mut rng = CrashRng::new(12);
    for _ in 0..iterations() {
        let mut input = vec![rng.below(4) as u8];
        if input[0] % 2 == 0 {
            let len = rng.below(6000) as usize;
            input.extend(random_bytes(&mut rng, len));
        } else {
            for _ in 0..rng.below(4) {
                let len = rng.below(64) as u8;
                input.extend([
                    rng.next_u64() as u8,
                    rng.next_u64() as u8,
                    rng.next_u64() as u8,
                    len,
                ]);
                input.extend(random_bytes(&mut rng, usize::from(len)));
            }
        }
        bodies::recovery_scan(&input);
    }
}
