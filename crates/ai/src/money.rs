//! Money as whole nano-dollars (10⁻⁹ USD): a price of $0.15 per million tokens is 150 per
//! token, exactly, and a day's spend adds up without rounding drift. Prices are written in
//! config as decimal USD per million tokens (`"2.50"`).

use std::fmt;

/// An amount in nano-dollars.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Nanos(pub u64);

impl Nanos {
    /// Nothing.
    pub const ZERO: Nanos = Nanos(0);

    /// `self + other`, saturating.
    pub fn plus(self, other: Nanos) -> Nanos {
        Nanos(self.0.saturating_add(other.0))
    }

    /// `self − other`, floored at zero.
    pub fn minus(self, other: Nanos) -> Nanos {
        Nanos(self.0.saturating_sub(other.0))
    }

    /// As USD (for display and metrics; never for arithmetic).
    pub fn usd(self) -> f64 {
        self.0 as f64 / 1e9
    }

    /// Parses decimal USD (`"2.5"`, `"0.000150"`, `"10"`), exactly, to the nano-dollar.
    pub fn parse_usd(text: &str) -> Result<Nanos, MoneyError> {
        let bad = || MoneyError(text.to_owned());
        let text = text.trim();
        let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
        if whole.is_empty() && fraction.is_empty()
            || !whole.bytes().all(|b| b.is_ascii_digit())
            || !fraction.bytes().all(|b| b.is_ascii_digit())
            || fraction.len() > 9
        {
            return Err(bad());
        }
        let whole: u64 = if whole.is_empty() {
            0
        } else {
            whole.parse().map_err(|_| bad())?
        };
        let scale = 10u64.pow(9 - u32::try_from(fraction.len()).map_err(|_| bad())?);
        let fraction: u64 = if fraction.is_empty() {
            0
        } else {
            fraction.parse::<u64>().map_err(|_| bad())? * scale
        };
        whole
            .checked_mul(1_000_000_000)
            .and_then(|w| w.checked_add(fraction))
            .map(Nanos)
            .ok_or_else(bad)
    }
}

impl fmt::Display for Nanos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "${}.{:09}",
            self.0 / 1_000_000_000,
            self.0 % 1_000_000_000
        )
    }
}

/// Not a decimal USD amount.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not an amount in USD (such as 2.50, at most 9 decimals)")]
pub struct MoneyError(pub String);

/// A model's prices, per million tokens.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Price {
    /// Per million prompt (input) tokens.
    pub input_per_million: Nanos,
    /// Per million completion (output) tokens.
    pub output_per_million: Nanos,
}

impl Price {
    /// What `input` and `output` tokens cost, rounded up to the nano-dollar (a budget never
    /// undercounts).
    pub fn cost(&self, input: u64, output: u64) -> Nanos {
        let part = |tokens: u64, per_million: Nanos| {
            let total = u128::from(tokens) * u128::from(per_million.0);
            u64::try_from(total.div_ceil(1_000_000)).unwrap_or(u64::MAX)
        };
        Nanos(
            part(input, self.input_per_million)
                .saturating_add(part(output, self.output_per_million)),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usd_parses_exactly_and_costs_round_up() {
        assert_eq!(Nanos::parse_usd("2.50"), Ok(Nanos(2_500_000_000)));
        assert_eq!(Nanos::parse_usd("0.000000001"), Ok(Nanos(1)));
        assert_eq!(Nanos::parse_usd(".5"), Ok(Nanos(500_000_000)));
        assert_eq!(Nanos::parse_usd("10"), Ok(Nanos(10_000_000_000)));
        for bad in [
            "",
            ".",
            "-1",
            "1.0000000001",
            "1e3",
            "abc",
            "99999999999999999999",
        ] {
            assert!(Nanos::parse_usd(bad).is_err(), "{bad}");
        }
        let price = Price {
            input_per_million: Nanos::parse_usd("0.15").unwrap(),
            output_per_million: Nanos::parse_usd("0.60").unwrap(),
        };
        // 1,000 in at 150 n$ each, 3 out at 600 each.
        assert_eq!(price.cost(1_000, 3), Nanos(151_800));
        // A third of a nano-dollar rounds up.
        let tiny = Price {
            input_per_million: Nanos(1),
            output_per_million: Nanos::ZERO,
        };
        assert_eq!(tiny.cost(1, 0), Nanos(1));
        assert_eq!(Nanos(2_500_000_001).to_string(), "$2.500000001");
    }
}
