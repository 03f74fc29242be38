//! Resource quantities (`resource.Quantity`): parsing `100m`, `1.5Gi`, `2e3`, `128974848` and
//! reading them at a scale, rounding up as upstream's `Value()` and `MilliValue()` do.
//!
//! Grammar (k8s.io/apimachinery/pkg/api/resource): an optional sign, digits with an optional
//! fraction, then a suffix — binary (`Ki` … `Ei`), decimal (`n`, `u`, `m`, ``, `k`, `M`, `G`,
//! `T`, `P`, `E`) or a decimal exponent (`e3`, `E-2`).

/// A parsed quantity: `mantissa × 10^exponent × 1024^binary`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quantity {
    mantissa: i128,
    exponent: i32,
    binary: u32,
}

/// Why a string is not a quantity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"
)]
pub struct QuantityError;

impl Quantity {
    /// Parse a quantity string.
    pub fn parse(s: &str) -> Result<Quantity, QuantityError> {
        let s = s.trim();
        let (negative, rest) = match s.as_bytes().first() {
            Some(b'-') => (true, &s[1..]),
            Some(b'+') => (false, &s[1..]),
            _ => (false, s),
        };
        let number_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, suffix) = rest.split_at(number_end);
        if number.is_empty() || number == "." || number.matches('.').count() > 1 {
            return Err(QuantityError);
        }
        let (int_part, frac_part) = number.split_once('.').unwrap_or((number, ""));
        let mut mantissa: i128 = 0;
        let mut exponent: i32 = 0;
        for c in int_part.chars().chain(frac_part.chars()) {
            let digit = i128::from(c as u8 - b'0');
            // Precision beyond 30 digits cannot matter for resources; drop it (rounding up
            // happens at read time).
            if mantissa < 10i128.pow(30) {
                mantissa = mantissa * 10 + digit;
            } else {
                exponent += 1;
            }
        }
        exponent -= frac_part.len() as i32;
        let (dec, binary) = match suffix {
            "" => (0, 0),
            "n" => (-9, 0),
            "u" => (-6, 0),
            "m" => (-3, 0),
            "k" => (3, 0),
            "M" => (6, 0),
            "G" => (9, 0),
            "T" => (12, 0),
            "P" => (15, 0),
            "E" => (18, 0),
            "Ki" => (0, 1),
            "Mi" => (0, 2),
            "Gi" => (0, 3),
            "Ti" => (0, 4),
            "Pi" => (0, 5),
            "Ei" => (0, 6),
            other => {
                let Some(exp) = other.strip_prefix(['e', 'E']) else {
                    return Err(QuantityError);
                };
                let value: i32 = exp.parse().map_err(|_| QuantityError)?;
                if !(-100..=100).contains(&value) {
                    return Err(QuantityError);
                }
                (value, 0)
            }
        };
        exponent += dec;
        if negative {
            mantissa = -mantissa;
        }
        Ok(Quantity {
            mantissa,
            exponent,
            binary,
        })
    }

    /// The value at `10^scale` units, rounded up (away from zero for positive values, as
    /// upstream's `ScaledValue`): scale 0 is `Value()`, scale -3 is `MilliValue()`. Saturates at
    /// the `i64` range.
    pub fn scaled(&self, scale: i32) -> i64 {
        let mut value = self.mantissa;
        for _ in 0..self.binary {
            value = value.saturating_mul(1024);
        }
        let shift = self.exponent - scale;
        let value = if shift >= 0 {
            let mut v = value;
            for _ in 0..shift.min(40) {
                v = v.saturating_mul(10);
            }
            v
        } else {
            let divisor = 10i128.checked_pow((-shift) as u32);
            match divisor {
                Some(d) => {
                    let q = value / d;
                    if value % d > 0 { q + 1 } else { q }
                }
                None => i128::from(value > 0),
            }
        };
        value.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
    }

    /// `Value()`: whole units, rounded up.
    pub fn value(&self) -> i64 {
        self.scaled(0)
    }

    /// `MilliValue()`: thousandths, rounded up.
    pub fn milli_value(&self) -> i64 {
        self.scaled(-3)
    }

    /// Whether the quantity is zero.
    pub fn is_zero(&self) -> bool {
        self.mantissa == 0
    }
}

impl std::str::FromStr for Quantity {
    type Err = QuantityError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Quantity::parse(s)
    }
}

/// Parse `s` and read it at `10^scale` units; unparseable quantities read as zero (the API
/// server validates quantities, so only hand-edited stores could hold such values).
pub fn scaled_or_zero(s: &str, scale: i32) -> i64 {
    Quantity::parse(s).map_or(0, |q| q.scaled(scale))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> Quantity {
        Quantity::parse(s).unwrap()
    }

    #[test]
    fn decimal_and_binary_suffixes() {
        assert_eq!(q("100m").milli_value(), 100);
        assert_eq!(q("1").milli_value(), 1000);
        assert_eq!(q("1.5").milli_value(), 1500);
        assert_eq!(q("0.1").milli_value(), 100);
        assert_eq!(q("500Mi").value(), 500 * 1024 * 1024);
        assert_eq!(q("32Gi").value(), 32 * 1024 * 1024 * 1024);
        assert_eq!(q("1k").value(), 1000);
        assert_eq!(q("2M").value(), 2_000_000);
        assert_eq!(q("128974848").value(), 128_974_848);
        assert_eq!(q("129e6").value(), 129_000_000);
        assert_eq!(q("1E3").value(), 1000);
        assert_eq!(q("110").value(), 110);
        assert_eq!(q("-1").value(), -1);
    }

    #[test]
    fn reading_rounds_up_like_upstream() {
        // MilliValue of 1n is 1 (rounded up), Value of 100m is 1.
        assert_eq!(q("1n").milli_value(), 1);
        assert_eq!(q("100m").value(), 1);
        assert_eq!(q("1.0001").milli_value(), 1001);
        assert_eq!(q("0").value(), 0);
        assert!(q("0m").is_zero());
    }

    #[test]
    fn rejects_garbage() {
        for bad in ["", "abc", "1.2.3", "1Qi", ".", "1e", "Mi"] {
            assert!(Quantity::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(scaled_or_zero("nope", 0), 0);
    }

    #[test]
    fn huge_values_saturate() {
        assert_eq!(q("10E").value(), i64::MAX);
        assert_eq!(q("1e100").milli_value(), i64::MAX);
    }
}
