//! Parsing and printing of sizes and durations, the way fio spells them.

use std::time::Duration;

/// Parses a byte size like `4096`, `4k`, `4KiB`, `256m`, `1g`; suffixes are binary (k = 1024),
/// case-insensitive, as fio reads them.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    let digits_end = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(trimmed.len());
    let (digits, suffix) = trimmed.split_at(digits_end);
    if digits.is_empty() {
        return Err(format!(
            "'{text}' is not a size: expected a number with an optional k, m, g or t suffix (e.g. 4k)"
        ));
    }
    let shift = match suffix.to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => {
            return Err(format!(
                "'{text}' is not a size: unknown suffix '{suffix}' (use k, m, g or t, e.g. 4k)"
            ))
        }
    };
    let number: u64 = digits
        .parse()
        .map_err(|_| format!("'{text}' is not a size: number too large"))?;
    number
        .checked_mul(1u64 << shift)
        .ok_or_else(|| format!("'{text}' is not a size: more than 2^64 bytes"))
}

/// Parses a non-zero byte size (for `--bs` and `--size`).
pub fn parse_nonzero_size(text: &str) -> Result<u64, String> {
    match parse_size(text)? {
        0 => Err(format!("'{text}' must be more than 0 bytes")),
        bytes => Ok(bytes),
    }
}

/// Parses a duration like `5`, `5s`, `500ms`, `2m`, `1.5s` (a bare number is seconds).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    match parse_seconds(text)? {
        seconds if seconds > 0.0 => Ok(Duration::from_secs_f64(seconds)),
        _ => Err(format!("'{text}' must be a positive duration")),
    }
}

/// A spin budget: a duration as for [`parse_duration`], or zero (`0`, `0us`: no spinning).
pub fn parse_spin(text: &str) -> Result<Duration, String> {
    parse_seconds(text).map(Duration::from_secs_f64)
}

/// A number of seconds, at least 0 and below 1e9, from a number and an optional unit.
fn parse_seconds(text: &str) -> Result<f64, String> {
    let trimmed = text.trim();
    let number_end = trimmed
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(trimmed.len());
    let (number, suffix) = trimmed.split_at(number_end);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("'{text}' is not a duration: expected e.g. 5s, 500ms or 2m"))?;
    let seconds = match suffix.to_ascii_lowercase().as_str() {
        "" | "s" => value,
        "ms" => value / 1e3,
        "us" => value / 1e6,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        _ => {
            return Err(format!(
                "'{text}' is not a duration: unknown unit '{suffix}' (use us, ms, s, m or h)"
            ))
        }
    };
    if !(0.0..1e9).contains(&seconds) {
        return Err(format!("'{text}' is out of range (up to 1e9 s)"));
    }
    Ok(seconds)
}

/// Prints bytes with a binary unit: `4 KiB`, `256 MiB`, `1.5 GiB`.
pub fn format_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if value.fract() == 0.0 {
        format!("{value:.0} {}", UNITS[unit])
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// Prints a count with thousands separators: `123,456`.
pub fn format_count(count: f64) -> String {
    let rounded = count.round() as u64;
    let digits = rounded.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index) % 3 == 0 {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_with_suffixes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("4k"), Ok(4096));
        assert_eq!(parse_size("4K"), Ok(4096));
        assert_eq!(parse_size("4KiB"), Ok(4096));
        assert_eq!(parse_size("256m"), Ok(256 << 20));
        assert_eq!(parse_size("1g"), Ok(1 << 30));
        assert_eq!(parse_size("2t"), Ok(2 << 40));
        assert_eq!(parse_size("512b"), Ok(512));
    }

    #[test]
    fn bad_sizes_are_rejected_with_the_value_named() {
        let err = parse_size("4q").unwrap_err();
        assert!(err.contains("'4q'") && err.contains("'q'"), "{err}");
        assert!(parse_size("").is_err());
        assert!(parse_size("k").is_err());
        assert!(parse_size("-4k").is_err());
        assert!(parse_size("99999999999999999999").is_err());
        assert!(parse_size("17179869184g").is_err());
        assert!(parse_nonzero_size("0").is_err());
        assert_eq!(parse_nonzero_size("8m"), Ok(8 << 20));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("5"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("s").is_err());
    }

    #[test]
    fn spin_budgets_may_be_zero() {
        assert_eq!(parse_spin("0"), Ok(Duration::ZERO));
        assert_eq!(parse_spin("0us"), Ok(Duration::ZERO));
        assert_eq!(parse_spin("250us"), Ok(Duration::from_micros(250)));
        assert_eq!(parse_spin("2ms"), Ok(Duration::from_millis(2)));
        let err = parse_spin("0x").unwrap_err();
        assert!(err.contains("'0x'"), "{err}");
        assert!(parse_spin("-1us").is_err());
        assert!(parse_spin("").is_err());
    }

    #[test]
    fn printing() {
        assert_eq!(format_bytes(4096), "4 KiB");
        assert_eq!(format_bytes(256 << 20), "256 MiB");
        assert_eq!(format_bytes(1536 << 20), "1.5 GiB");
        assert_eq!(format_count(1234567.4), "1,234,567");
        assert_eq!(format_count(999.0), "999");
        assert_eq!(format_count(0.0), "0");
    }
}
