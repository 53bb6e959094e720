//! A log-linear latency histogram, in the caller's unit.

/// Latencies: exact below 256, then 128 buckets per power of two (< 0.8 %
/// error); the unit (ns, µs) is the caller's.
#[derive(Clone, Debug)]
pub struct Hist {
    buckets: Vec<u64>,
    count: u64,
    max: u64,
}

impl Default for Hist {
    fn default() -> Self {
        Self::new()
    }
}

impl Hist {
    const SUB: u32 = 7;

    /// An empty histogram.
    pub fn new() -> Self {
        Hist {
            buckets: vec![0; 256 + 56 * 128 + 1],
            count: 0,
            max: 0,
        }
    }

    fn index(v: u64) -> usize {
        if v < 256 {
            return v as usize;
        }
        let e = 63 - v.leading_zeros();
        let m = (v >> (e - Self::SUB)) - 128;
        256 + (e as usize - 8) * 128 + m as usize
    }

    /// The middle of bucket `i`.
    fn value(i: usize) -> u64 {
        if i < 256 {
            return i as u64;
        }
        let j = i - 256;
        let e = (j / 128 + 8) as u32;
        let m = (j % 128 + 128) as u64;
        let shift = e - Self::SUB;
        (m << shift) + (1u64 << shift) / 2
    }

    /// Counts one value.
    pub fn record(&mut self, v: u64) {
        self.buckets[Self::index(v)] += 1;
        self.count += 1;
        self.max = self.max.max(v);
    }

    /// Forgets every value.
    pub fn reset(&mut self) {
        self.buckets.iter_mut().for_each(|b| *b = 0);
        self.count = 0;
        self.max = 0;
    }

    /// Adds the values of `other`.
    pub fn merge(&mut self, other: &Hist) {
        for (b, n) in self.buckets.iter_mut().zip(&other.buckets) {
            *b += n;
        }
        self.count += other.count;
        self.max = self.max.max(other.max);
    }

    /// How many values were recorded.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The largest value recorded (0 when empty).
    pub fn max(&self) -> u64 {
        self.max
    }

    /// The `q` quantile (0 to 1), never above the maximum; 0 when empty.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.count == 0 {
            return 0;
        }
        let rank = ((self.count as f64 * q).ceil() as u64).clamp(1, self.count);
        let mut seen = 0;
        for (i, &b) in self.buckets.iter().enumerate() {
            seen += b;
            if seen >= rank {
                return Self::value(i).min(self.max);
            }
        }
        self.max
    }
}

#[cfg(test)]
mod tests {
    use super::Hist;

    #[test]
    fn quantiles_within_one_percent() {
        let mut h = Hist::new();
        assert_eq!(h.quantile(0.5), 0);
        for v in 1..=100_000u64 {
            h.record(v * 10);
        }
        let p50 = h.quantile(0.5) as f64;
        assert!((p50 - 500_000.0).abs() / 500_000.0 < 0.01, "{p50}");
        assert_eq!(h.quantile(1.0), 1_000_000);
        let mut other = Hist::new();
        other.record(5);
        h.merge(&other);
        assert_eq!(h.count(), 100_001);
        h.reset();
        assert_eq!((h.count(), h.max()), (0, 0));
    }
}
