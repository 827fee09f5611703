//! When sessions start: how many are due after a given time, for a constant rate or a ramp.
//!
//! The driver polls [`Schedule::due`] on a short tick and starts sessions until it has
//! started that many (each also waits for a concurrency slot), so a late tick catches up
//! instead of drifting.

use std::time::Duration;

use super::scenario::Arrival;

/// The arrival curve of a run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Schedule {
    /// Every session at once (only the concurrency limit spaces them).
    Immediate,
    /// `per_sec` sessions per second.
    Rate {
        /// Sessions per second.
        per_sec: f64,
    },
    /// A rate going linearly from `from` to `to` per second over `secs`, then staying at `to`.
    Ramp {
        /// Rate at the start.
        from: f64,
        /// Rate at the end of the ramp and after it.
        to: f64,
        /// Length of the ramp, seconds.
        secs: f64,
    },
}

impl Schedule {
    /// The schedule a validated `[arrival]` table describes.
    pub fn from_arrival(arrival: &Arrival) -> Self {
        match (
            arrival.rate_per_sec,
            arrival.ramp_from_per_sec,
            arrival.ramp_to_per_sec,
            arrival.ramp_secs,
        ) {
            (Some(per_sec), ..) => Self::Rate { per_sec },
            (None, Some(from), Some(to), Some(secs)) => Self::Ramp { from, to, secs },
            _ => Self::Immediate,
        }
    }

    /// How many of `total` sessions should have started `elapsed` after the start: the
    /// integral of the rate, rounded down (the first session starts at once).
    pub fn due(&self, elapsed: Duration, total: u64) -> u64 {
        let t = elapsed.as_secs_f64();
        let started = match *self {
            Self::Immediate => return total,
            Self::Rate { per_sec } => per_sec * t,
            Self::Ramp { from, to, secs } if t < secs => {
                from * t + (to - from) * t * t / (2.0 * secs)
            }
            Self::Ramp { from, to, secs } => (from + to) * secs / 2.0 + to * (t - secs),
        };
        // `as` saturates: a huge or NaN value cannot wrap.
        (1 + started.floor() as u64).min(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    #[test]
    fn immediate_is_everything() {
        assert_eq!(Schedule::Immediate.due(Duration::ZERO, 7), 7);
    }

    #[test]
    fn rate_integrates() {
        let s = Schedule::Rate { per_sec: 10.0 };
        assert_eq!(s.due(Duration::ZERO, 100), 1);
        assert_eq!(s.due(secs(0.95), 100), 10);
        assert_eq!(s.due(secs(2.0), 100), 21);
        assert_eq!(s.due(secs(1000.0), 100), 100);
    }

    #[test]
    fn ramp_integrates_then_holds() {
        let s = Schedule::Ramp {
            from: 0.0,
            to: 10.0,
            secs: 2.0,
        };
        // Area under the ramp after 1 s: 10/2 * 1 * 1 / 2 = 2.5; after 2 s: 10.
        assert_eq!(s.due(secs(1.0), 1000), 3);
        assert_eq!(s.due(secs(2.0), 1000), 11);
        assert_eq!(s.due(secs(3.0), 1000), 21);
    }
}
