//! When to try a failed job again.

use std::time::Duration;

use rand::RngExt;

/// Exponential backoff with "equal jitter": the n-th retry waits between half
/// and all of `base * 2^(n-1)`, capped. The fixed half keeps retries from
/// hammering a struggling dependency; the random half spreads out jobs that
/// failed together.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub base: Duration,
    pub cap: Duration,
}

impl Backoff {
    /// The upper bound of the wait after `attempt` (1-based) failed.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1).min(32);
        self.base.saturating_mul(1u32 << doublings.min(31)).min(self.cap)
    }

    /// The wait after `attempt` failed, jittered.
    pub fn delay(&self, attempt: u32, rng: &mut impl rand::Rng) -> Duration {
        let ceiling = self.ceiling(attempt);
        let half = ceiling / 2;
        let spread = u64::try_from((ceiling - half).as_millis()).unwrap_or(u64::MAX);
        half + Duration::from_millis(rng.random_range(0..=spread))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn backoff_doubles_from_base_up_to_the_cap_with_jitter_in_the_upper_half() {
        let backoff = Backoff { base: Duration::from_secs(5), cap: Duration::from_secs(300) };
        let ceilings: Vec<u64> = (1..=9).map(|n| backoff.ceiling(n).as_secs()).collect();
        assert_eq!(ceilings, [5, 10, 20, 40, 80, 160, 300, 300, 300]);

        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for attempt in 1..=40 {
            let ceiling = backoff.ceiling(attempt);
            let mut seen = std::collections::HashSet::new();
            for _ in 0..50 {
                let delay = backoff.delay(attempt, &mut rng);
                assert!(delay >= ceiling / 2 && delay <= ceiling, "attempt {attempt}: {delay:?} vs {ceiling:?}");
                seen.insert(delay);
            }
            assert!(seen.len() > 10, "attempt {attempt}: jitter should spread delays, saw {}", seen.len());
        }
    }

    #[test]
    fn backoff_survives_huge_attempt_numbers() {
        let backoff = Backoff { base: Duration::from_secs(1), cap: Duration::from_secs(3600) };
        assert_eq!(backoff.ceiling(u32::MAX), Duration::from_secs(3600));
    }
}
