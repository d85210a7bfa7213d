//! Signed rollout waves: when each host may activate a release.
//!
//! A statement may carry a rollout plan. It starts at the statement's
//! `created` time and is a piecewise-linear curve of "percent of hosts
//! allowed" over time: `points` are `[seconds after created, percent]`,
//! starting at second 0 and ending at 100 %. The default plan for a
//! duration D is linear: `[[0, 0], [D, 100]]`; "1 % at once, then the rest
//! after an hour, spread over a day" is `[[0, 1], [3600, 1], [90000, 100]]`.
//!
//! Each host draws its position in the fleet deterministically from the
//! remote, the version and its host ID:
//!
//! ```text
//! f    = first 8 bytes of BLAKE3("npcnix-rollout/v1\0" remote "\0" version "\0" host_id),
//!        big-endian, divided by 2^64                (uniform in [0, 1))
//! slot = created + the first time t at which the curve reaches f * 100 %
//! ```
//!
//! so a host's slot differs per release (no host is always first) and every
//! host computes the same answer without talking to anyone. The worked
//! example is in `docs/protocol.md`.
//!
//! A plan may gate stages (issue 35): the hosts from a gate's percent on
//! wait for a signed promotion of its stage, and a signed halt closes what
//! has not opened; see [`Rollout::admission`] and [`super::decision`].

use serde::{Deserialize, Serialize};

/// Longest rollout accepted: a year.
pub const MAX_ROLLOUT_SECS: u64 = 366 * 86_400;
/// Most points in a plan.
pub const MAX_POINTS: usize = 32;

/// Most gates in a plan.
pub const MAX_GATES: usize = 8;

/// A rollout plan as signed in the statement.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rollout {
    /// `[seconds after created, percent of hosts]`, strictly increasing in
    /// time, non-decreasing in percent, from `[0, p]` to `[D, 100]`.
    pub points: Vec<(u64, u32)>,
    /// Gated stages (issue 35), by increasing percent: absent in plans
    /// without gates, so their statements stay byte-identical (and hosts
    /// before gates, which refuse unknown fields, still read them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gates: Vec<Gate>,
}

/// A gated stage: the hosts from `percent` of the fleet on (up to the next
/// gate) activate only once a signed promotion of `stage` exists for the
/// release ([`super::decision`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Gate {
    pub stage: String,
    pub percent: u32,
}

/// When a host may activate, given the release's verified rollout
/// decisions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Admission {
    /// From this time on.
    At(u64),
    /// Behind the gate of this stage, which no promotion opened yet.
    Gated { stage: String },
    /// A halt (signed at `at`) closed this host's stage before it opened.
    Halted { at: u64 },
}

/// Why a rollout plan is not valid.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RolloutError {
    #[error("rollout needs 2 to {MAX_POINTS} points")]
    PointCount,
    #[error("rollout must start at second 0")]
    Start,
    #[error("rollout must end at 100 percent")]
    End,
    #[error("rollout must last 1 to {MAX_ROLLOUT_SECS} seconds")]
    Duration,
    #[error("rollout points must be increasing in time and non-decreasing in percent")]
    Order,
    #[error("rollout percentages are at most 100")]
    Percent,
    #[error("rollout gates: at most {MAX_GATES}, at increasing percentages from 1 to 99, each naming a distinct stage (a-z, 0-9, -)")]
    Gates,
}

impl Rollout {
    /// A linear rollout over `secs` seconds.
    pub fn linear(secs: u64) -> Rollout {
        Rollout {
            points: vec![(0, 0), (secs, 100)],
            gates: Vec::new(),
        }
    }

    /// Seconds from `created` to the end of the rollout.
    pub fn duration(&self) -> u64 {
        self.points.last().map_or(0, |p| p.0)
    }

    /// Why the plan is not valid, if it is not.
    pub fn check(&self) -> Result<(), RolloutError> {
        let p = &self.points;
        if p.len() < 2 || p.len() > MAX_POINTS {
            return Err(RolloutError::PointCount);
        }
        if p[0].0 != 0 {
            return Err(RolloutError::Start);
        }
        if p.last().map(|l| l.1) != Some(100) {
            return Err(RolloutError::End);
        }
        if self.duration() == 0 || self.duration() > MAX_ROLLOUT_SECS {
            return Err(RolloutError::Duration);
        }
        if p.windows(2).any(|w| w[1].0 <= w[0].0 || w[1].1 < w[0].1) {
            return Err(RolloutError::Order);
        }
        if p.iter().any(|x| x.1 > 100) {
            return Err(RolloutError::Percent);
        }
        let g = &self.gates;
        if g.len() > MAX_GATES
            || g.iter().any(|g| {
                !super::decision::is_stage_name(&g.stage) || g.percent == 0 || g.percent >= 100
            })
            || g.windows(2).any(|w| w[1].percent <= w[0].percent)
            || g.iter()
                .enumerate()
                .any(|(i, a)| g[..i].iter().any(|b| b.stage == a.stage))
        {
            return Err(RolloutError::Gates);
        }
        Ok(())
    }

    /// A position as millionths of a percent of the fleet (0..10^8).
    fn millionths(position: u64) -> u128 {
        (u128::from(position) * 100_000_000) >> 64
    }

    /// The gate (index into `gates`) a host at `position` is behind, if any.
    pub fn gate_of(&self, position: u64) -> Option<usize> {
        let at = Self::millionths(position);
        self.gates
            .iter()
            .rposition(|g| at >= u128::from(g.percent) * 1_000_000)
    }

    /// When a host at `position` may activate a release created at
    /// `created`: its slot on the curve; behind a gate, only once that gate
    /// and every gate before it are promoted (`promoted(stage)`: the
    /// promotion's `created`), and then no sooner after the promotion than
    /// the curve put it after its stage's start, so a late promotion spreads
    /// the stage over the same time instead of opening it at once. A halt
    /// (`halt`: its `created`) keeps closed what had not opened by then: a
    /// slot after it, and promotions signed after it.
    pub fn admission(
        &self,
        created: u64,
        position: u64,
        promoted: impl Fn(&str) -> Option<u64>,
        halt: Option<u64>,
    ) -> Admission {
        let offset = self.offset(position);
        let mut slot = created.saturating_add(offset);
        let closed = |stage: &str| match halt {
            Some(at) => Admission::Halted { at },
            None => Admission::Gated {
                stage: stage.to_owned(),
            },
        };
        if let Some(i) = self.gate_of(position) {
            let mut opened = 0;
            for g in &self.gates[..=i] {
                // A stage opens no sooner than every stage before it.
                match promoted(&g.stage).filter(|t| halt.is_none_or(|h| *t <= h)) {
                    Some(t) => opened = opened.max(t),
                    None => return closed(&g.stage),
                }
            }
            let stage_start = self.time_at(u128::from(self.gates[i].percent) * 1_000_000);
            slot = slot.max(opened.saturating_add(offset.saturating_sub(stage_start)));
        }
        match halt {
            Some(at) if slot > at => Admission::Halted { at },
            _ => Admission::At(slot),
        }
    }

    /// This host's position in the fleet for this release, in [0, 1) as a
    /// fraction of 2^64.
    pub fn position(remote: &str, version: u64, host_id: &str) -> u64 {
        let mut h = blake3::Hasher::new();
        h.update(b"npcnix-rollout/v1\0");
        h.update(remote.as_bytes());
        h.update(b"\0");
        h.update(version.to_string().as_bytes());
        h.update(b"\0");
        h.update(host_id.as_bytes());
        let d = h.finalize();
        let mut b = [0u8; 8];
        b.copy_from_slice(&d.as_bytes()[..8]);
        u64::from_be_bytes(b)
    }

    /// Seconds after `created` at which a host at `position` (a fraction of
    /// 2^64) may activate: the first time the curve reaches it.
    pub fn offset(&self, position: u64) -> u64 {
        // Work in millionths of a percent: exact integer arithmetic.
        self.time_at(Self::millionths(position))
    }

    /// The first time (seconds after `created`) the curve reaches `target`
    /// millionths of a percent.
    fn time_at(&self, target: u128) -> u64 {
        for w in self.points.windows(2) {
            let ((t0, p0), (t1, p1)) = (w[0], w[1]);
            let (lo, hi) = (u128::from(p0) * 1_000_000, u128::from(p1) * 1_000_000);
            if target < lo {
                return t0;
            }
            if target < hi {
                // Linear between the two points.
                let span = u128::from(t1 - t0);
                return t0 + ((target - lo) * span / (hi - lo)) as u64;
            }
        }
        self.duration()
    }

    /// When a host may activate: `created` plus its offset.
    pub fn slot(&self, created: u64, remote: &str, version: u64, host_id: &str) -> u64 {
        created.saturating_add(self.offset(Self::position(remote, version, host_id)))
    }
}

/// A host ID as npcnix accepts it: 1-64 characters from `a-z 0-9 - _ .`,
/// starting with a letter or digit (it names an object in the store).
pub fn is_host_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_slots_spread_uniformly_over_the_duration() {
        let r = Rollout::linear(1000);
        let mut buckets = [0u32; 10];
        for i in 0..10_000 {
            let s = r.slot(0, "prod", 7, &format!("host-{i}"));
            assert!(s < 1000);
            buckets[(s / 100) as usize] += 1;
        }
        for b in buckets {
            assert!((850..1150).contains(&b), "{buckets:?}");
        }
    }

    #[test]
    fn slots_are_deterministic_and_differ_per_version() {
        let r = Rollout::linear(3600);
        assert_eq!(r.slot(100, "prod", 1, "a"), r.slot(100, "prod", 1, "a"));
        let moved = (0..20)
            .filter(|i| {
                r.slot(0, "prod", 1, &format!("h{i}")) != r.slot(0, "prod", 2, &format!("h{i}"))
            })
            .count();
        assert!(moved > 15);
    }

    #[test]
    fn a_canary_step_holds_the_rest_back() {
        // 1 % at once, nobody else for an hour, then linear over a day.
        let r = Rollout {
            points: vec![(0, 1), (3600, 1), (90_000, 100)],
            gates: Vec::new(),
        };
        r.check().expect("valid");
        let early = (0..10_000)
            .filter(|i| r.slot(0, "prod", 3, &format!("h{i}")) == 0)
            .count();
        assert!((50..160).contains(&early), "{early}");
        assert!((0..10_000)
            .map(|i| r.slot(0, "prod", 3, &format!("h{i}")))
            .all(|s| s == 0 || s >= 3600));
        assert_eq!(r.offset(u64::MAX), 90_000 - 1);
    }

    #[test]
    fn invalid_plans_are_refused() {
        for points in [
            vec![(0, 0)],
            vec![(1, 0), (10, 100)],
            vec![(0, 0), (10, 90)],
            vec![(0, 50), (10, 40), (20, 100)],
            vec![(0, 0), (0, 100)],
            vec![(0, 0), (MAX_ROLLOUT_SECS + 1, 100)],
        ] {
            assert!(Rollout {
                points,
                gates: Vec::new()
            }
            .check()
            .is_err());
        }
    }

    fn gated() -> Rollout {
        // 10 % at once, the rest over 1000 s; stages from 10 % and 50 %.
        Rollout {
            points: vec![(0, 10), (1000, 100)],
            gates: vec![
                Gate {
                    stage: "early".into(),
                    percent: 10,
                },
                Gate {
                    stage: "rest".into(),
                    percent: 50,
                },
            ],
        }
    }

    /// A position at `pct` percent of the fleet.
    fn at(pct: u64) -> u64 {
        ((u128::from(pct) << 64) / 100) as u64 + 1
    }

    #[test]
    fn a_gate_holds_its_stage_until_promoted_and_spreads_it_from_the_promotion() {
        let r = gated();
        r.check().expect("valid");
        let none = |_: &str| None;
        assert_eq!(r.admission(100, at(5), none, None), Admission::At(100));
        assert_eq!(
            r.admission(100, at(30), none, None),
            Admission::Gated {
                stage: "early".into()
            }
        );
        // Promoted early, long after the curve reached the host: the stage
        // starts at the promotion and keeps its spread.
        let early = |s: &str| (s == "early").then_some(5000);
        let off = r.offset(at(30)) - r.offset(at(10));
        assert_eq!(
            r.admission(100, at(30), early, None),
            Admission::At(5000 + off)
        );
        // Promoted before the curve got there: the curve decides.
        let soon = |s: &str| (s == "early").then_some(100);
        assert_eq!(
            r.admission(100, at(30), soon, None),
            Admission::At(100 + r.offset(at(30)))
        );
        // The last stage needs its own promotion and every one before it.
        assert_eq!(
            r.admission(100, at(70), early, None),
            Admission::Gated {
                stage: "rest".into()
            }
        );
        let only_rest = |s: &str| (s == "rest").then_some(5000);
        assert_eq!(
            r.admission(100, at(70), only_rest, None),
            Admission::Gated {
                stage: "early".into()
            }
        );
    }

    #[test]
    fn a_halt_keeps_what_had_not_opened_closed() {
        let r = gated();
        let early = |s: &str| (s == "early").then_some(5000);
        // Opened before the halt: stays open for a slot before the halt.
        let slot = match r.admission(100, at(30), early, None) {
            Admission::At(t) => t,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            r.admission(100, at(30), early, Some(slot)),
            Admission::At(slot)
        );
        assert_eq!(
            r.admission(100, at(30), early, Some(slot - 1)),
            Admission::Halted { at: slot - 1 }
        );
        // A promotion signed after the halt opens nothing.
        assert_eq!(
            r.admission(100, at(30), early, Some(4000)),
            Admission::Halted { at: 4000 }
        );
        // An ungated host whose slot on the curve comes after the halt.
        let plain = Rollout::linear(1000);
        assert_eq!(
            plain.admission(0, at(90), |_| None, Some(10)),
            Admission::Halted { at: 10 }
        );
        assert_eq!(
            plain.admission(0, at(0), |_| None, Some(10)),
            Admission::At(0)
        );
    }

    #[test]
    fn invalid_gates_are_refused() {
        let gate = |stage: &str, percent| Gate {
            stage: stage.into(),
            percent,
        };
        for gates in [
            vec![gate("a", 0)],
            vec![gate("a", 100)],
            vec![gate("a", 50), gate("b", 50)],
            vec![gate("a", 50), gate("b", 20)],
            vec![gate("a", 20), gate("a", 50)],
            vec![gate("A", 20)],
            (1..=9).map(|i| gate(&format!("s{i}"), i)).collect(),
        ] {
            let r = Rollout {
                points: vec![(0, 0), (10, 100)],
                gates,
            };
            assert_eq!(r.check(), Err(RolloutError::Gates));
        }
    }

    #[test]
    fn host_ids_name_a_store_object_safely() {
        assert!(is_host_id("web-1.eu"));
        for bad in ["", "Web", "-x", "a/b", "..", &"x".repeat(65)] {
            assert!(!is_host_id(bad), "{bad}");
        }
    }
}

#[cfg(test)]
mod worked_example {
    use super::*;

    /// The example in docs/protocol.md ("Rollout waves").
    #[test]
    fn worked_example_in_protocol_md() {
        let pos = Rollout::position("prod", 42, "web-01");
        let r = Rollout::linear(3600);
        assert_eq!(pos, 0x2a73_e6b0_edf8_105d);
        assert_eq!(r.offset(pos), 596);
        assert_eq!(r.slot(1_800_000_000, "prod", 42, "web-01"), 1_800_000_596);
        let staged = Rollout {
            points: vec![(0, 1), (3600, 1), (90_000, 100)],
            gates: Vec::new(),
        };
        assert_eq!(staged.offset(pos), 17_199);
    }
}
