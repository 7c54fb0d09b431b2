//! Kubernetes resource quantities as exact integers.
//!
//! The apiserver stores quantities in canonical form ("1024Mi" comes back as
//! "1Gi"). bulkhead compares what it wants with what the server holds, so it
//! must write the canonical form itself or it would see drift forever and
//! write on every reconcile.

use std::fmt;

/// A non-negative quantity in thousandths of the base unit, with the suffix
/// family it was written in (which decides the canonical spelling).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Quantity {
    milli: i128,
    binary: bool,
}

/// Why a quantity string could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("'{value}' is not a valid Kubernetes quantity (expected e.g. 500m, 2, 1.5Gi, 10k)")]
pub struct QuantityError {
    /// The rejected text.
    pub value: String,
}

// Larger than any quantity Kubernetes accepts (2^63-1), so overflow checks stay simple.
const LIMIT: i128 = 1 << 100;

impl Quantity {
    /// Parses the Kubernetes quantity grammar; negative values are rejected.
    pub fn parse(text: &str) -> Result<Self, QuantityError> {
        let err = || QuantityError { value: text.to_string() };
        let s = text.trim();
        let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+')).unwrap_or(s.len());
        let (number, suffix) = s.split_at(split);
        let number = number.strip_prefix('+').unwrap_or(number);
        if number.is_empty() || number == "." {
            return Err(err());
        }
        let (int_part, frac_part) = match number.split_once('.') {
            Some((i, f)) => (i, f),
            None => (number, ""),
        };
        if frac_part.contains('.') {
            return Err(err());
        }
        // value = digits * 10^(-frac_len) * multiplier; keep it exact in milli-units.
        let digits: String = format!("{int_part}{frac_part}");
        if digits.len() > 30 {
            return Err(err());
        }
        let mantissa: i128 = digits.parse().map_err(|_| err())?;
        let frac_len = frac_part.len() as u32;
        let (num, den, binary): (i128, i128, bool) = match suffix {
            "" => (1, 1, false),
            "m" => (1, 1000, false),
            "k" => (1_000, 1, false),
            "M" => (1_000_000, 1, false),
            "G" => (1_000_000_000, 1, false),
            "T" => (1_000_000_000_000, 1, false),
            "P" => (1_000_000_000_000_000, 1, false),
            "E" => (1_000_000_000_000_000_000, 1, false),
            "Ki" => (1 << 10, 1, true),
            "Mi" => (1 << 20, 1, true),
            "Gi" => (1 << 30, 1, true),
            "Ti" => (1 << 40, 1, true),
            "Pi" => (1 << 50, 1, true),
            "Ei" => (1 << 60, 1, true),
            exp if exp.starts_with(['e', 'E']) => {
                let e: i32 = exp[1..].parse().map_err(|_| err())?;
                if !(-18..=18).contains(&e) {
                    return Err(err());
                }
                if e >= 0 { (10i128.pow(e as u32), 1, false) } else { (1, 10i128.pow((-e) as u32), false) }
            }
            _ => return Err(err()),
        };
        let numerator = mantissa.checked_mul(num).and_then(|v| v.checked_mul(1000)).ok_or_else(err)?;
        let denominator = den * 10i128.pow(frac_len);
        // Kubernetes rounds sub-milli precision up.
        let milli = (numerator + denominator - 1) / denominator;
        if milli > LIMIT {
            return Err(err());
        }
        Ok(Self { milli, binary })
    }

    /// A quantity of `milli` thousandths, spelled in the given family.
    pub fn from_milli(milli: i128, binary: bool) -> Self {
        Self { milli: milli.max(0), binary }
    }

    /// The value in thousandths of the base unit.
    pub fn milli(self) -> i128 {
        self.milli
    }

    /// Whether the canonical spelling uses binary suffixes (Ki, Mi, …).
    pub fn is_binary(self) -> bool {
        self.binary
    }
}

impl fmt::Display for Quantity {
    /// The apiserver's canonical spelling (resource.Quantity.String in Go).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.milli;
        if m == 0 {
            return f.write_str("0");
        }
        let whole = m % 1000 == 0;
        // Go prints binary quantities below 1Ki, or with a fractional part, as decimal.
        if self.binary && whole && m / 1000 >= 1024 {
            let mut v = m / 1000;
            let mut i = 0;
            while v % 1024 == 0 && i < 6 {
                v /= 1024;
                i += 1;
            }
            let suffix = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"][i];
            return write!(f, "{v}{suffix}");
        }
        let mut v = m;
        let mut exp = -3i32;
        while v % 1000 == 0 && exp < 18 {
            v /= 1000;
            exp += 3;
        }
        let suffix = match exp {
            -3 => "m",
            0 => "",
            3 => "k",
            6 => "M",
            9 => "G",
            12 => "T",
            15 => "P",
            _ => "E",
        };
        write!(f, "{v}{suffix}")
    }
}

/// Rewrites a quantity string into the apiserver's canonical spelling.
pub fn canonical(text: &str) -> Result<String, QuantityError> {
    Quantity::parse(text).map(|q| q.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_matches_the_apiserver() {
        for (input, expected) in [
            ("1024Mi", "1Gi"),
            ("1.5Gi", "1536Mi"),
            ("1.5", "1500m"),
            ("0.5", "500m"),
            ("500m", "500m"),
            ("2000", "2k"),
            ("4", "4"),
            ("1e3", "1k"),
            ("100Ki", "100Ki"),
            ("512", "512"),
            ("1000Ki", "1000Ki"),
            ("0", "0"),
            ("0.1m", "1m"),
            ("10G", "10G"),
            ("8Gi", "8Gi"),
            ("+3", "3"),
        ] {
            assert_eq!(canonical(input).unwrap(), expected, "input {input}");
        }
    }

    #[test]
    fn rejects_garbage() {
        for bad in ["", "abc", "1.2.3", "5Q", "-1", "1e99", "."] {
            assert!(Quantity::parse(bad).is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn compares_across_suffixes() {
        assert_eq!(Quantity::parse("1Gi").unwrap().milli(), Quantity::parse("1024Mi").unwrap().milli());
        assert!(Quantity::parse("1.5").unwrap().milli() > Quantity::parse("1400m").unwrap().milli());
    }
}
