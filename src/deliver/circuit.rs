//! The circuit breaker of one sink. A sink whose every delivery failed for
//! `delivery.suspend_after` is suspended: its deliveries wait (deferred, no
//! attempt used, no worker held) while one probe delivery every
//! `delivery.probe_every` finds out whether it is back. Any success closes
//! the circuit. The state lives in this process only: each replica learns a
//! sink's health from its own deliveries, which costs a replica a few
//! failures more and needs no coordination.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

#[derive(Debug)]
pub struct Circuit {
    suspend_after: Duration,
    probe_every: Duration,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// The first failure since the last success.
    failing_since: Option<Instant>,
    /// Suspended until then; `None` while the circuit is closed. Admitting
    /// a probe pushes it one `probe_every` further, so the others wait for
    /// the probe's verdict, and a probe that never reports back (its job
    /// failed before sending) only delays the next one.
    open_until: Option<Instant>,
}

/// Whether a delivery may go ahead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Go; `probe` when it is the one delivery testing a suspended sink.
    Go { probe: bool },
    /// Suspended: wait this long.
    Wait(Duration),
}

/// A change worth a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    Suspended,
    Recovered,
}

/// What an operator sees of a circuit: closed, failing (not long enough to
/// be suspended yet) or suspended, with the times that matter.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum CircuitState {
    Closed,
    Failing {
        /// Every delivery has failed for this long.
        failing_for_secs: f64,
    },
    Suspended {
        failing_for_secs: f64,
        /// The next probe may go in this long (0: the next delivery is the probe).
        next_probe_in_secs: f64,
    },
}

impl Circuit {
    /// The state as of `now`, for the admin API; changes nothing.
    pub fn state_at(&self, now: Instant) -> CircuitState {
        let state = self.state();
        let failing_for_secs =
            state.failing_since.map_or(0.0, |since| now.saturating_duration_since(since).as_secs_f64());
        match state.open_until {
            Some(until) => CircuitState::Suspended {
                failing_for_secs,
                next_probe_in_secs: until.saturating_duration_since(now).as_secs_f64(),
            },
            None if state.failing_since.is_some() => CircuitState::Failing { failing_for_secs },
            None => CircuitState::Closed,
        }
    }

    pub fn new(suspend_after: Duration, probe_every: Duration) -> Self {
        Self { suspend_after, probe_every, state: Mutex::default() }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is a few plain fields, valid after any panic.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn admit(&self, now: Instant) -> Admission {
        let mut state = self.state();
        match state.open_until {
            None => Admission::Go { probe: false },
            Some(until) if now < until => Admission::Wait(until - now),
            Some(_) => {
                state.open_until = Some(now + self.probe_every);
                Admission::Go { probe: true }
            }
        }
    }

    pub fn success(&self) -> Option<Transition> {
        let mut state = self.state();
        let was_open = state.open_until.is_some();
        *state = State::default();
        was_open.then_some(Transition::Recovered)
    }

    pub fn failure(&self, probe: bool, now: Instant) -> Option<Transition> {
        let mut state = self.state();
        let since = *state.failing_since.get_or_insert(now);
        if probe {
            state.open_until = Some(now + self.probe_every);
            return None;
        }
        if state.open_until.is_none() && now.duration_since(since) >= self.suspend_after {
            state.open_until = Some(now + self.probe_every);
            return Some(Transition::Suspended);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sink_failing_long_enough_is_suspended_probed_and_closed_by_one_success() {
        let circuit = Circuit::new(Duration::from_secs(300), Duration::from_secs(60));
        let t0 = Instant::now();
        assert_eq!(circuit.admit(t0), Admission::Go { probe: false });
        assert_eq!(circuit.failure(false, t0), None);
        assert_eq!(circuit.failure(false, t0 + Duration::from_secs(299)), None, "not failing long enough yet");
        let t1 = t0 + Duration::from_secs(300);
        assert_eq!(circuit.failure(false, t1), Some(Transition::Suspended));
        assert_eq!(circuit.admit(t1 + Duration::from_secs(10)), Admission::Wait(Duration::from_secs(50)));

        let t2 = t1 + Duration::from_secs(60);
        assert_eq!(circuit.admit(t2), Admission::Go { probe: true });
        assert_eq!(circuit.admit(t2), Admission::Wait(Duration::from_secs(60)), "one probe at a time");
        assert_eq!(circuit.failure(true, t2), None);
        assert_eq!(circuit.admit(t2 + Duration::from_secs(1)), Admission::Wait(Duration::from_secs(59)));

        // A probe that never reports back holds the others for one interval only.
        let t3 = t2 + Duration::from_secs(60);
        assert_eq!(circuit.admit(t3), Admission::Go { probe: true });
        assert_eq!(circuit.admit(t3 + Duration::from_secs(60)), Admission::Go { probe: true });

        let t4 = t3 + Duration::from_secs(120);
        assert_eq!(circuit.admit(t4), Admission::Go { probe: true });
        assert_eq!(circuit.success(), Some(Transition::Recovered));
        assert_eq!(circuit.admit(t4), Admission::Go { probe: false });
    }

    #[test]
    fn the_state_shown_to_operators_follows_the_circuit() {
        let circuit = Circuit::new(Duration::from_secs(300), Duration::from_secs(60));
        let t0 = Instant::now();
        assert_eq!(circuit.state_at(t0), CircuitState::Closed);
        circuit.failure(false, t0);
        assert_eq!(circuit.state_at(t0 + Duration::from_secs(10)), CircuitState::Failing { failing_for_secs: 10.0 });
        circuit.failure(false, t0 + Duration::from_secs(300));
        assert_eq!(
            circuit.state_at(t0 + Duration::from_secs(330)),
            CircuitState::Suspended { failing_for_secs: 330.0, next_probe_in_secs: 30.0 }
        );
        circuit.success();
        assert_eq!(circuit.state_at(t0 + Duration::from_secs(330)), CircuitState::Closed);
    }

    #[test]
    fn any_success_restarts_the_failure_clock() {
        let circuit = Circuit::new(Duration::from_secs(300), Duration::from_secs(60));
        let t0 = Instant::now();
        circuit.failure(false, t0);
        assert_eq!(circuit.success(), None);
        assert_eq!(circuit.failure(false, t0 + Duration::from_secs(400)), None);
        assert_eq!(circuit.admit(t0 + Duration::from_secs(400)), Admission::Go { probe: false });
    }
}
