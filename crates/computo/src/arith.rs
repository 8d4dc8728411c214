//! Numbers: arithmetic, ordering and equality under colloquium's integer rule.
//!
//! The reference computes every arithmetic result in doubles. Colloquium keeps integers integral
//! (language description, section 6): `+ - * %` give an integer when every operand is an integer
//! and the exact result fits in `i64`; otherwise they give the float the reference computes, left
//! to right in doubles. `/` always gives a float. Each fold therefore carries both results and
//! picks one at the end, so an overflow half-way falls back to exactly the reference's float.

use std::cmp::Ordering;

/// A number taken from a value: an integer when it fits in `i64`, otherwise a double (a `u64`
/// above `i64::MAX` is computed with as a double, as in the reference).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Num {
    Int(i64),
    Float(f64),
}

impl Num {
    #[inline]
    pub(crate) fn from_json(n: &serde_json::Number) -> Num {
        match n.as_i64() {
            Some(i) => Num::Int(i),
            None => Num::Float(n.as_f64().unwrap_or(f64::NAN)),
        }
    }

    pub(crate) fn as_f64(self) -> f64 {
        match self {
            // Deliberately lossy above 2^53: this is the reference's double arithmetic.
            #[allow(clippy::cast_precision_loss)]
            Num::Int(i) => i as f64,
            Num::Float(f) => f,
        }
    }

    pub(crate) fn is_zero(self) -> bool {
        match self {
            Num::Int(i) => i == 0,
            Num::Float(f) => f == 0.0,
        }
    }

    /// Orders two numbers: integers exactly, anything else as doubles (`None` for NaN).
    pub(crate) fn partial_cmp(self, other: Num) -> Option<Ordering> {
        match (self, other) {
            (Num::Int(a), Num::Int(b)) => Some(a.cmp(&b)),
            (a, b) => a.as_f64().partial_cmp(&b.as_f64()),
        }
    }

    /// Equality by value: `1 == 1.0`.
    pub(crate) fn equals(self, other: Num) -> bool {
        self.partial_cmp(other) == Some(Ordering::Equal)
    }
}

/// Which arithmetic fold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Arith {
    Add,
    Sub,
    Mul,
    Rem,
}

/// A running `+ - * %` over operands given one at a time, carrying the integer result (while it
/// is exact) beside the reference's double result.
pub(crate) struct Fold {
    op: Arith,
    int: Option<i64>,
    float: f64,
}

/// `%` or `/` met a zero divisor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DivisionByZero;

impl Fold {
    pub(crate) fn new(op: Arith, first: Num) -> Fold {
        let int = match first {
            Num::Int(i) => Some(i),
            Num::Float(_) => None,
        };
        Fold {
            op,
            int,
            float: first.as_f64(),
        }
    }

    pub(crate) fn push(&mut self, operand: Num) -> Result<(), DivisionByZero> {
        if self.op == Arith::Rem && operand.is_zero() {
            return Err(DivisionByZero);
        }
        let f = operand.as_f64();
        self.float = match self.op {
            Arith::Add => self.float + f,
            Arith::Sub => self.float - f,
            Arith::Mul => self.float * f,
            Arith::Rem => self.float % f,
        };
        self.int = match (self.int, operand) {
            (Some(a), Num::Int(b)) => match self.op {
                Arith::Add => a.checked_add(b),
                Arith::Sub => a.checked_sub(b),
                Arith::Mul => a.checked_mul(b),
                Arith::Rem => a.checked_rem(b),
            },
            _ => None,
        };
        Ok(())
    }

    pub(crate) fn finish(self) -> Num {
        match self.int {
            Some(i) => Num::Int(i),
            None => Num::Float(self.float),
        }
    }
}

/// Unary minus: an integer stays an integer unless it is `i64::MIN`.
pub(crate) fn negate(n: Num) -> Num {
    match n {
        Num::Int(i) => i.checked_neg().map_or(Num::Float(-n.as_f64()), Num::Int),
        Num::Float(f) => Num::Float(-f),
    }
}

/// Division is always done in doubles, so the type of a quotient never depends on the values.
pub(crate) fn divide(dividend: f64, divisor: Num) -> Result<f64, DivisionByZero> {
    if divisor.is_zero() {
        return Err(DivisionByZero);
    }
    Ok(dividend / divisor.as_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fold(op: Arith, operands: &[Num]) -> Result<Num, DivisionByZero> {
        let mut f = Fold::new(op, operands[0]);
        for &n in &operands[1..] {
            f.push(n)?;
        }
        Ok(f.finish())
    }

    #[test]
    fn integer_operands_stay_integers() {
        use Num::Int;
        assert_eq!(fold(Arith::Add, &[Int(1), Int(2), Int(3)]), Ok(Int(6)));
        assert_eq!(fold(Arith::Sub, &[Int(10), Int(3), Int(2)]), Ok(Int(5)));
        assert_eq!(fold(Arith::Mul, &[Int(2), Int(3), Int(4)]), Ok(Int(24)));
        assert_eq!(fold(Arith::Rem, &[Int(-7), Int(3)]), Ok(Int(-1)));
        assert_eq!(fold(Arith::Rem, &[Int(7), Int(-3)]), Ok(Int(1)));
        assert_eq!(
            fold(Arith::Add, &[Int(9_007_199_254_740_993), Int(0)]),
            Ok(Int(9_007_199_254_740_993))
        );
        assert_eq!(negate(Int(5)), Int(-5));
    }

    #[test]
    fn a_float_operand_makes_a_float() {
        assert_eq!(
            fold(Arith::Add, &[Num::Int(1), Num::Float(0.5)]),
            Ok(Num::Float(1.5))
        );
        assert_eq!(
            fold(Arith::Rem, &[Num::Float(7.5), Num::Int(2)]),
            Ok(Num::Float(1.5))
        );
    }

    #[test]
    fn overflow_falls_back_to_the_reference_double() {
        let big = Num::Int(i64::MAX);
        assert_eq!(
            fold(Arith::Add, &[big, Num::Int(1)]),
            Ok(Num::Float(i64::MAX as f64 + 1.0))
        );
        assert_eq!(
            fold(Arith::Mul, &[big, Num::Int(2), Num::Int(0)]),
            Ok(Num::Float(0.0))
        );
        assert_eq!(negate(Num::Int(i64::MIN)), Num::Float(-(i64::MIN as f64)));
        // i64::MIN % -1 overflows in i64; the double result is 0.
        assert_eq!(
            fold(Arith::Rem, &[Num::Int(i64::MIN), Num::Int(-1)]),
            Ok(Num::Float(-0.0))
        );
    }

    #[test]
    fn zero_divisors_are_errors_and_division_is_always_a_float() {
        assert_eq!(
            fold(Arith::Rem, &[Num::Int(5), Num::Int(0)]),
            Err(DivisionByZero)
        );
        assert_eq!(
            fold(Arith::Rem, &[Num::Int(5), Num::Float(-0.0)]),
            Err(DivisionByZero)
        );
        assert_eq!(divide(6.0, Num::Int(2)), Ok(3.0));
        assert_eq!(divide(1.0, Num::Float(0.0)), Err(DivisionByZero));
    }

    #[test]
    fn comparison_is_by_value() {
        assert!(Num::Int(1).equals(Num::Float(1.0)));
        assert!(!Num::Float(f64::NAN).equals(Num::Float(f64::NAN)));
        assert_eq!(
            Num::Int(2).partial_cmp(Num::Float(2.5)),
            Some(Ordering::Less)
        );
    }
}
