//! Resource quantities (`100m`, `1.5`, `128Mi`, `1e3`, `2G`): parsing and exact arithmetic,
//! with upstream's rounding (`Value` and `MilliValue` round up).
//!
//! A quantity is held as an integer count of nano-units, which represents every quantity a
//! user can write for cpu, memory, storage and extended resources without rounding.

use std::fmt;

/// A parsed quantity in nano-units (1 = 10⁻⁹).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Quantity(pub i128);

/// Why a quantity did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"
)]
pub struct QuantityError;

const NANO: i128 = 1_000_000_000;

impl Quantity {
    /// Zero.
    pub const ZERO: Quantity = Quantity(0);

    /// A whole number of units.
    pub fn from_units(units: i64) -> Quantity {
        Quantity(units as i128 * NANO)
    }

    /// Thousandths of a unit (millicores).
    pub fn from_milli(milli: i64) -> Quantity {
        Quantity(milli as i128 * 1_000_000)
    }

    /// Parse upstream's quantity syntax.
    pub fn parse(s: &str) -> Result<Quantity, QuantityError> {
        let s = s.trim();
        if s.is_empty() {
            return Err(QuantityError);
        }
        let (sign, rest) = match s.as_bytes()[0] {
            b'-' => (-1, &s[1..]),
            b'+' => (1, &s[1..]),
            _ => (1, s),
        };
        let split = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, suffix) = rest.split_at(split);
        if number.is_empty() || number == "." || number.matches('.').count() > 1 {
            return Err(QuantityError);
        }
        let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
        // Value as an integer with `frac.len()` decimal places.
        let digits = format!("{whole}{frac}");
        let mantissa: i128 = if digits.is_empty() {
            0
        } else {
            digits.parse().map_err(|_| QuantityError)?
        };
        let mut scale_num: i128 = NANO;
        let mut scale_den: i128 = 10i128.checked_pow(frac.len() as u32).ok_or(QuantityError)?;
        let pow = |base: i128, exp: u32| base.checked_pow(exp).ok_or(QuantityError);
        match suffix {
            "" => {}
            "n" => scale_den *= NANO,
            "u" => scale_den *= 1_000_000,
            "m" => scale_den *= 1_000,
            "k" => scale_num *= 1_000,
            "M" => scale_num *= pow(10, 6)?,
            "G" => scale_num *= pow(10, 9)?,
            "T" => scale_num *= pow(10, 12)?,
            "P" => scale_num *= pow(10, 15)?,
            "E" => scale_num *= pow(10, 18)?,
            "Ki" => scale_num *= 1 << 10,
            "Mi" => scale_num *= 1 << 20,
            "Gi" => scale_num *= 1 << 30,
            "Ti" => scale_num *= 1 << 40,
            "Pi" => scale_num *= 1 << 50,
            "Ei" => scale_num *= 1 << 60,
            exp if exp.starts_with(['e', 'E']) => {
                let e: i32 = exp[1..].parse().map_err(|_| QuantityError)?;
                if !(-18..=18).contains(&e) {
                    return Err(QuantityError);
                }
                if e >= 0 {
                    scale_num *= pow(10, e as u32)?;
                } else {
                    scale_den *= pow(10, (-e) as u32)?;
                }
            }
            _ => return Err(QuantityError),
        }
        let scaled = mantissa.checked_mul(scale_num).ok_or(QuantityError)?;
        // Round up, like upstream's conversion of sub-nano precision.
        let value = (scaled + scale_den - 1) / scale_den;
        Ok(Quantity(sign * value))
    }

    /// Whole units, rounded up (upstream `Value()`).
    pub fn value(self) -> i64 {
        div_ceil(self.0, NANO) as i64
    }

    /// Thousandths, rounded up (upstream `MilliValue()`).
    pub fn milli_value(self) -> i64 {
        div_ceil(self.0, 1_000_000) as i64
    }

    /// Whether the quantity is zero.
    pub fn is_zero(self) -> bool {
        self.0 == 0
    }
}

fn div_ceil(a: i128, b: i128) -> i128 {
    let q = a / b;
    if a % b != 0 && (a > 0) == (b > 0) {
        q + 1
    } else {
        q
    }
}

impl std::ops::Add for Quantity {
    type Output = Quantity;
    fn add(self, o: Quantity) -> Quantity {
        Quantity(self.0.saturating_add(o.0))
    }
}

impl std::ops::AddAssign for Quantity {
    fn add_assign(&mut self, o: Quantity) {
        self.0 = self.0.saturating_add(o.0);
    }
}

impl std::ops::Sub for Quantity {
    type Output = Quantity;
    fn sub(self, o: Quantity) -> Quantity {
        Quantity(self.0.saturating_sub(o.0))
    }
}

impl fmt::Display for Quantity {
    /// A canonical decimal form (`1500m`, `2`, `134217728`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 % NANO == 0 {
            write!(f, "{}", self.0 / NANO)
        } else if self.0 % 1_000_000 == 0 {
            write!(f, "{}m", self.0 / 1_000_000)
        } else {
            write!(f, "{}n", self.0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> Quantity {
        Quantity::parse(s).unwrap()
    }

    #[test]
    fn cpu_quantities() {
        assert_eq!(q("100m").milli_value(), 100);
        assert_eq!(q("1").milli_value(), 1000);
        assert_eq!(q("1.5").milli_value(), 1500);
        assert_eq!(q("0.1").milli_value(), 100);
        assert_eq!(q("250m").value(), 1, "Value rounds up");
        assert_eq!(q("1e3").value(), 1000);
        assert_eq!(q("1500u").milli_value(), 2, "MilliValue rounds up");
    }

    #[test]
    fn memory_quantities() {
        assert_eq!(q("128Mi").value(), 128 << 20);
        assert_eq!(q("1Gi").value(), 1 << 30);
        assert_eq!(q("1G").value(), 1_000_000_000);
        assert_eq!(q("1.5Gi").value(), 3 << 29);
        assert_eq!(q("256Gi").value(), 256 << 30);
        assert_eq!(q("1Ki").value(), 1024);
        assert_eq!(q("500k").value(), 500_000);
    }

    #[test]
    fn bad_quantities_are_refused() {
        for bad in ["", "abc", "1.2.3", "1Qi", "--1", "1e99", "."] {
            assert!(Quantity::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn arithmetic_and_printing() {
        assert_eq!((q("100m") + q("1.9")).to_string(), "2");
        assert_eq!((q("1") - q("250m")).to_string(), "750m");
        assert_eq!(q("-1").value(), -1);
        assert!(q("0").is_zero());
    }
}
