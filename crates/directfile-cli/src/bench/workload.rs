//! The workload: parameters, offsets (a cheap PRNG, no allocation), aligned buffers for the
//! baselines, and laying the file out with real data before anything is measured.

use std::fs;
use std::io;
#[cfg(unix)]
use std::os::unix::fs::OpenOptionsExt;
#[cfg(windows)]
use std::os::windows::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::args::Rw;
use crate::bench::stats::WorkloadLabel;
use crate::sys;

/// One workload, validated: `size` is a non-zero multiple of `bs`, `bs` of `offset_align`.
#[derive(Debug, Clone, Copy)]
pub struct Workload {
    pub rw: Rw,
    pub bs: usize,
    pub qd: usize,
    pub size: u64,
    pub runtime: Duration,
    pub dsync: bool,
    /// Alignment of the baselines' O_DIRECT buffers, in bytes: the file's, but at least a page.
    pub memory_align: usize,
    /// What runs directfile's futures.
    pub executor: crate::args::ExecutorArg,
    /// How directfile's driver is tuned (the defaults unless `--spin` or `--ring-only`).
    pub tuning: DriverTuning,
}

/// The driver settings `bench` can change, to measure what they trade.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DriverTuning {
    /// `DriverBuilder::spin`, or the driver's default.
    pub spin: Option<Duration>,
    /// `DriverBuilder::inline_at_qd1(false)`.
    pub ring_only: bool,
}

impl DriverTuning {
    /// What differs from the driver's defaults (`spin 0 us, ring only`), or `None`.
    pub fn describe(&self) -> Option<String> {
        self.describe_on(true)
    }

    /// The same for one driver: `ring only` is io_uring's (`on_uring`) and changes no other.
    fn describe_on(&self, on_uring: bool) -> Option<String> {
        let mut parts = Vec::new();
        if let Some(spin) = self.spin {
            parts.push(format!("spin {} us", spin.as_micros()));
        }
        if self.ring_only && on_uring {
            parts.push("ring only".to_string());
        }
        (!parts.is_empty()).then(|| parts.join(", "))
    }

    /// A directfile backend's name with the tuning it ran with (`threads[spin 0 us]`,
    /// `uring[spin 0 us, ring only]`), so a JSON line or a table row is never mistaken for
    /// the defaults'.
    pub fn name(&self, backend: String, on_uring: bool) -> String {
        match self.describe_on(on_uring) {
            Some(tuning) => format!("{backend}[{tuning}]"),
            None => backend,
        }
    }
}

impl Workload {
    pub fn label(&self) -> WorkloadLabel {
        WorkloadLabel {
            rw: self.rw,
            bs_bytes: self.bs as u64,
            qd: self.qd as u32,
            dsync: self.dsync,
        }
    }

    pub fn blocks(&self) -> u64 {
        self.size / self.bs as u64
    }

    /// open(2) flags for the baselines: O_DIRECT, plus O_DSYNC for write-through (on Windows
    /// `FILE_FLAG_NO_BUFFERING`, plus `FILE_FLAG_WRITE_THROUGH`).
    pub fn open_flags(&self) -> sys::OpenFlags {
        sys::DIRECT | if self.dsync { sys::WRITE_THROUGH } else { 0 }
    }

    /// Opens `path` read-write with [`Workload::open_flags`] (for std and tokio).
    pub fn open_std(&self, path: &Path) -> io::Result<fs::File> {
        fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(self.open_flags())
            .open(path)
    }
}

/// SplitMix64: tiny, fast, statistically fine for spreading offsets, no allocation.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64(seed)
    }

    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..bound` by multiply-high (Lemire), bias below 2^-32 for our bounds.
    #[inline]
    pub fn below(&mut self, bound: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(bound)) >> 64) as u64
    }
}

/// Where each op goes: random blocks (per-worker PRNG) or one sequential cursor shared by all
/// in-flight ops, as fio does with iodepth > 1. Offsets are multiples of bs below size.
pub struct OffsetGenerator {
    random: bool,
    rng: SplitMix64,
    blocks: u64,
    bs: u64,
    cursor: Arc<AtomicU64>,
}

impl OffsetGenerator {
    pub fn new(workload: &Workload, worker: usize, cursor: &Arc<AtomicU64>) -> OffsetGenerator {
        OffsetGenerator {
            random: workload.rw.is_random(),
            rng: SplitMix64::new(0x5eed_0000 + worker as u64 * 0x1_0000_0001),
            blocks: workload.blocks(),
            bs: workload.bs as u64,
            cursor: Arc::clone(cursor),
        }
    }

    #[inline]
    pub fn next_offset(&mut self) -> u64 {
        let block = if self.random {
            self.rng.below(self.blocks)
        } else {
            self.cursor.fetch_add(1, Ordering::Relaxed) % self.blocks
        };
        block * self.bs
    }
}

/// A heap buffer whose usable part starts at an `align`-byte boundary, built without `unsafe`
/// by over-allocating and slicing (moving the Vec does not move its heap memory).
pub struct AlignedVec {
    storage: Vec<u8>,
    start: usize,
    len: usize,
}

impl AlignedVec {
    pub fn new(len: usize, align: usize, fill_seed: u64) -> AlignedVec {
        let align = align.max(1);
        let mut storage = vec![0u8; len + align];
        let misalignment = storage.as_ptr() as usize % align;
        let start = (align - misalignment) % align;
        let mut rng = SplitMix64::new(fill_seed);
        for chunk in storage[start..start + len].chunks_mut(8) {
            let bytes = rng.next_u64().to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
        AlignedVec {
            storage,
            start,
            len,
        }
    }

    pub fn as_slice(&self) -> &[u8] {
        &self.storage[self.start..self.start + self.len]
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.storage[self.start..self.start + self.len]
    }
}

/// Writes the whole file once with pseudo-random data (as fio lays out its files), unless it
/// already is at least `size` long, then makes it durable. Fallocate alone is not enough: on ext4
/// a direct write into an unwritten extent needs extent conversion and is punted to a worker,
/// which would distort the latencies we measure.
pub fn lay_out(path: &Path, workload: &Workload, mut progress: impl FnMut(u64)) -> io::Result<()> {
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(sys::DIRECT)
        .open(path)?;
    if file.metadata()?.len() >= workload.size {
        return Ok(());
    }
    // 1 MiB chunks, or a multiple of bs below that; size is a multiple of bs, so every chunk is.
    let chunk = ((1 << 20) / workload.bs).max(1) * workload.bs;
    let mut buffer = AlignedVec::new(chunk, workload.memory_align, 0xda7a);
    let mut offset = 0u64;
    while offset < workload.size {
        let length = chunk.min((workload.size - offset) as usize);
        sys::write_all_at(&file, &buffer.as_mut_slice()[..length], offset)?;
        offset += length as u64;
        progress(offset);
    }
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workload(rw: Rw) -> Workload {
        Workload {
            rw,
            bs: 4096,
            qd: 4,
            size: 1 << 20,
            runtime: Duration::from_secs(1),
            dsync: false,
            memory_align: 4096,
            executor: crate::args::ExecutorArg::Own,
            tuning: DriverTuning::default(),
        }
    }

    #[test]
    fn a_tuned_backend_is_named_with_what_applies_to_it() {
        let defaults = DriverTuning::default();
        assert_eq!(defaults.describe(), None);
        assert_eq!(defaults.name("uring".into(), true), "uring");
        let tuned = DriverTuning {
            spin: Some(Duration::ZERO),
            ring_only: true,
        };
        assert_eq!(tuned.describe().as_deref(), Some("spin 0 us, ring only"));
        assert_eq!(
            tuned.name("uring+futures".into(), true),
            "uring+futures[spin 0 us, ring only]"
        );
        // The thread pool has no ring: only the spin changes it.
        assert_eq!(tuned.name("threads".into(), false), "threads[spin 0 us]");
        let ring_only = DriverTuning {
            spin: None,
            ring_only: true,
        };
        assert_eq!(ring_only.name("threads".into(), false), "threads");
    }

    #[test]
    fn random_offsets_are_aligned_in_range_and_spread() {
        let cursor = Arc::new(AtomicU64::new(0));
        let w = workload(Rw::Randwrite);
        let mut offsets = OffsetGenerator::new(&w, 0, &cursor);
        let mut seen = vec![false; w.blocks() as usize];
        for _ in 0..10_000 {
            let offset = offsets.next_offset();
            assert_eq!(offset % 4096, 0);
            assert!(offset < w.size);
            seen[(offset / 4096) as usize] = true;
        }
        // 10,000 draws over 256 blocks: every block is hit (miss probability ~ 256 * e^-39).
        assert!(seen.iter().all(|&hit| hit));
    }

    #[test]
    fn sequential_offsets_wrap_and_are_shared() {
        let cursor = Arc::new(AtomicU64::new(0));
        let w = workload(Rw::Write);
        let mut first = OffsetGenerator::new(&w, 0, &cursor);
        let mut second = OffsetGenerator::new(&w, 1, &cursor);
        assert_eq!(first.next_offset(), 0);
        assert_eq!(second.next_offset(), 4096);
        for _ in 2..256 {
            first.next_offset();
        }
        assert_eq!(second.next_offset(), 0, "wraps at size");
    }

    #[test]
    fn aligned_vec_is_aligned() {
        for align in [512, 4096, 65536] {
            let buffer = AlignedVec::new(8192, align, 1);
            assert_eq!(buffer.as_slice().as_ptr() as usize % align, 0);
            assert_eq!(buffer.as_slice().len(), 8192);
            assert!(
                buffer.as_slice().iter().any(|&byte| byte != 0),
                "filled with data"
            );
        }
    }

    #[test]
    fn lay_out_writes_the_whole_file() {
        let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../target/directfile-cli-unit");
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("layout-{}", std::process::id()));
        fs::write(&path, b"").unwrap();
        let w = Workload {
            size: 3 << 20,
            ..workload(Rw::Randread)
        };
        let mut last = 0;
        lay_out(&path, &w, |done| last = done).unwrap();
        assert_eq!(last, 3 << 20);
        let bytes = fs::read(&path).unwrap();
        fs::remove_file(&path).unwrap();
        assert_eq!(bytes.len(), 3 << 20);
        assert!(bytes[(2 << 20)..].iter().any(|&byte| byte != 0));
    }
}
