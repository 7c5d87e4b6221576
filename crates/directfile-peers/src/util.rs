//! Parsing, the offset generator, aligned buffers, medians.

use std::time::Duration;

/// `5s`, `500ms`, `2m`, or plain seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, scale) = if let Some(n) = text.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix('m') {
        (n, 60.0)
    } else {
        (text, 1.0)
    };
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("not a duration: {text:?} (try 5s or 500ms)"))?;
    if !(value.is_finite() && value > 0.0) {
        return Err(format!("duration must be positive: {text:?}"));
    }
    Ok(Duration::from_secs_f64(value * scale))
}

/// `4096`, `4k`, `256m`, `1g` (binary units).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let lower = text.trim().to_ascii_lowercase();
    let lower = lower.trim_end_matches("ib").trim_end_matches('b');
    let (number, shift) = match lower.chars().last() {
        Some('k') => (&lower[..lower.len() - 1], 10),
        Some('m') => (&lower[..lower.len() - 1], 20),
        Some('g') => (&lower[..lower.len() - 1], 30),
        Some('t') => (&lower[..lower.len() - 1], 40),
        _ => (lower, 0),
    };
    let value: u64 = number
        .trim()
        .parse()
        .map_err(|_| format!("not a size: {text:?} (try 4k or 256m)"))?;
    value
        .checked_shl(shift)
        .filter(|v| *v > 0 && v >> shift == value)
        .ok_or_else(|| format!("size out of range: {text:?}"))
}

/// io_uring rings and registered buffers count against RLIMIT_MEMLOCK on older kernels and
/// glommio registers a large buffer area: lift the limit when allowed (root), else keep it.
pub fn raise_memlock_limit() {
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit reads a valid, initialised rlimit struct; failure is harmless.
    let _ = unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) };
}

/// SplitMix64, as the main CLI uses for random offsets.
#[derive(Clone, Debug)]
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

    #[inline]
    pub fn below(&mut self, bound: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(bound)) >> 64) as u64
    }
}

/// Random block-aligned offsets below `blocks * bs`, one generator per in-flight task.
#[derive(Clone, Debug)]
pub struct Offsets {
    rng: SplitMix64,
    blocks: u64,
    bs: u64,
}

impl Offsets {
    pub fn new(task: usize, blocks: u64, bs: usize) -> Offsets {
        Offsets {
            rng: SplitMix64::new(0x5eed_0000 + task as u64 * 0x1_0000_0001),
            blocks,
            bs: bs as u64,
        }
    }

    #[inline]
    pub fn next_offset(&mut self) -> u64 {
        self.rng.below(self.blocks) * self.bs
    }
}

/// A `len`-byte slice at a 4096-byte boundary, filled with pseudo-random bytes, that lives for
/// the rest of the process (leaked: a few pages per task per run). tokio-uring and compio take
/// `&'static [u8]` as an owned I/O buffer, so this needs no unsafe buffer trait impl.
pub fn leaked_aligned(len: usize, seed: u64) -> &'static [u8] {
    const ALIGN: usize = 4096;
    let storage: &'static mut [u8] = Vec::leak(vec![0u8; len + ALIGN]);
    let skew = storage.as_ptr() as usize % ALIGN;
    let start = if skew == 0 { 0 } else { ALIGN - skew };
    let slice = &mut storage[start..start + len];
    fill(slice, seed);
    slice
}

pub fn fill(bytes: &mut [u8], seed: u64) {
    let mut rng = SplitMix64::new(seed);
    for chunk in bytes.chunks_mut(8) {
        let word = rng.next_u64().to_le_bytes();
        chunk.copy_from_slice(&word[..chunk.len()]);
    }
}

/// The median of `values` (the mean of the middle two for an even count).
pub fn median(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    }
}

pub fn round_to(value: f64, digits: i32) -> f64 {
    let scale = 10f64.powi(digits);
    (value * scale).round() / scale
}

/// JSON number, or `null` when not finite.
pub fn json_number(value: f64, digits: i32) -> String {
    if value.is_finite() {
        format!("{}", round_to(value, digits))
    } else {
        "null".to_string()
    }
}
