//! Money as whole nano-dollars (10⁻⁹ USD): a price of $0.15 per million tokens is 150 per
//! token, exactly, and a day's spend adds up without rounding drift. Prices are written in
//! config as decimal USD per million tokens (`"2.50"`).

pub use colloquium_config::ai::{MoneyError, Nanos};

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
    fn costs_round_up() {
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
    }
}
