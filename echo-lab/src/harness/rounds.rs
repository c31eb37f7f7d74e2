//! Interleaved rounds: on a shared machine one window moves by tens of percent, so every
//! server is measured once per round, the order reversed on alternate rounds, and each figure
//! is reported as its median and its min–max over the rounds.

use serde_json::Value;

use crate::report::{finite, round};

/// The order of `n` servers in round `round` (from 1): as given on odd rounds, reversed on even
/// ones.
pub fn order(n: usize, round: u32) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    if round % 2 == 0 {
        order.reverse();
    }
    order
}

/// The median and the range of a figure over the rounds (NaN where no round measured it).
#[derive(Clone, Copy, Debug)]
pub struct Spread {
    /// The median of the rounds that measured it.
    pub median: f64,
    /// The lowest.
    pub min: f64,
    /// The highest.
    pub max: f64,
}

impl Spread {
    pub fn of(values: impl IntoIterator<Item = f64>) -> Spread {
        let mut v: Vec<f64> = values.into_iter().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return Spread { median: f64::NAN, min: f64::NAN, max: f64::NAN };
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 };
        Spread { median, min: v[0], max: v[n - 1] }
    }

    pub fn overlaps(&self, other: &Spread) -> bool {
        self.min <= other.max && other.min <= self.max
    }

    /// `median`, `median_min` and `median_max` keys for JSON (`null` where not measured).
    pub fn json(&self, key: &str, digits: i32, into: &mut serde_json::Map<String, Value>) {
        into.insert(key.to_string(), finite(round(self.median, digits)));
        into.insert(format!("{key}_min"), finite(round(self.min, digits)));
        into.insert(format!("{key}_max"), finite(round(self.max, digits)));
    }
}
