//! Verifying a rollout decision (a promotion or a halt, issue 35): pure,
//! like the release verification. Signatures first (the remote's rollout
//! keys, at their threshold, over the exact bytes with the binding trusted
//! comment); only then is the decision parsed, and it must name exactly the
//! release, action and stage asked for. Anything else is refused, so a
//! store that forges, swaps or replays decisions can only withhold them.

use crate::format::decision::{self, Action, Decision};
use crate::format::digest::Digest;
use crate::format::keys::KeyId;
use crate::format::remote::RemoteName;

use super::TrustedKey;

/// Who may sign rollout decisions for a remote (keys with role `rollout`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RolloutTrust {
    pub keys: Vec<TrustedKey>,
    /// Distinct rollout keys that must sign (at least 1).
    pub threshold: usize,
}

/// The decision a caller looks for: one release, one action (and stage).
#[derive(Clone, Copy, Debug)]
pub struct Expected<'a> {
    pub remote: &'a RemoteName,
    pub version: u64,
    pub statement: Digest,
    /// `Some(stage)`: a promotion of it; `None`: a halt.
    pub stage: Option<&'a str>,
}

/// A decision whose signatures and binding checked out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedDecision {
    pub decision: Decision,
    pub signers: Vec<KeyId>,
}

/// Why a decision does not count.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecisionRefusal {
    #[error("{0}")]
    Format(#[from] decision::DecisionError),
    #[error("{0}")]
    Signatures(String),
    #[error("{0}")]
    Mismatch(String),
    #[error("dated {created}, more than {skew} s ahead of this clock ({now})")]
    FutureDated { created: u64, now: u64, skew: u64 },
}

/// Verifies an envelope as read from the store.
pub fn verify(
    envelope: &[u8],
    trust: &RolloutTrust,
    expected: Expected<'_>,
    max_future_skew_secs: u64,
    now: u64,
) -> Result<VerifiedDecision, DecisionRefusal> {
    let (bytes, texts) = decision::decode(envelope)?;
    let (signers, problems) = super::count_signers(
        &bytes,
        &texts,
        &trust.keys,
        expected.remote,
        now,
        "rollout",
        |key| decision::trusted_comment(&bytes, key),
    );
    let need = trust.threshold.max(1);
    if signers.len() < need {
        return Err(DecisionRefusal::Signatures(format!(
            "{} valid signature(s) from distinct rollout keys of {}, {need} required{}",
            signers.len(),
            expected.remote,
            if problems.is_empty() {
                String::new()
            } else {
                format!(" ({})", problems.join("; "))
            }
        )));
    }
    let d = Decision::parse(&bytes)?;
    let action = if expected.stage.is_some() {
        Action::Promote
    } else {
        Action::Halt
    };
    if d.remote != *expected.remote
        || d.version != expected.version
        || d.statement != expected.statement
        || d.action != action
        || d.stage.as_deref() != expected.stage
    {
        return Err(DecisionRefusal::Mismatch(format!(
            "signed for {} version {} (statement {}), {}, not {} version {} (statement {}), {}",
            d.remote,
            d.version,
            d.statement,
            describe(d.action, d.stage.as_deref()),
            expected.remote,
            expected.version,
            expected.statement,
            describe(action, expected.stage)
        )));
    }
    if d.created > now.saturating_add(max_future_skew_secs) {
        return Err(DecisionRefusal::FutureDated {
            created: d.created,
            now,
            skew: max_future_skew_secs,
        });
    }
    Ok(VerifiedDecision {
        decision: d,
        signers,
    })
}

fn describe(action: Action, stage: Option<&str>) -> String {
    match (action, stage) {
        (Action::Promote, Some(s)) => format!("a promotion of stage {s:?}"),
        (Action::Promote, None) => "a promotion".into(),
        (Action::Halt, _) => "a halt".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::decision::{encode, trusted_comment, Evidence, DECISION_TYPE};
    use crate::format::keys::SecretKey;
    use crate::format::sign::sign_minisign;
    use crate::verify::KeyScope;

    const NOW: u64 = 1_800_000_000;

    fn remote() -> RemoteName {
        RemoteName::new("prod").expect("name")
    }

    fn decision(stage: Option<&str>) -> Decision {
        Decision {
            kind: DECISION_TYPE.into(),
            remote: remote(),
            version: 7,
            statement: Digest::of(b"st"),
            action: if stage.is_some() {
                Action::Promote
            } else {
                Action::Halt
            },
            stage: stage.map(str::to_owned),
            created: NOW,
            evidence: stage.map(|_| Evidence {
                hosts: 3,
                confirmed: 3,
                rolled_back: 0,
                required_percent: 95,
            }),
            reason: None,
        }
    }

    fn signed(d: &Decision, keys: &[&SecretKey]) -> Vec<u8> {
        let b = d.to_bytes();
        let sigs: Vec<String> = keys
            .iter()
            .map(|k| sign_minisign(k, &b, &trusted_comment(&b, k.public_key().key_id)))
            .collect();
        encode(&b, &sigs)
    }

    fn trust(keys: &[&SecretKey], threshold: usize) -> RolloutTrust {
        RolloutTrust {
            keys: keys
                .iter()
                .map(|k| TrustedKey {
                    key: k.public_key(),
                    scope: KeyScope::Remotes(vec![remote()]),
                    not_after: None,
                })
                .collect(),
            threshold,
        }
    }

    fn expect(stage: Option<&'static str>) -> Expected<'static> {
        static R: std::sync::OnceLock<RemoteName> = std::sync::OnceLock::new();
        Expected {
            remote: R.get_or_init(remote),
            version: 7,
            statement: Digest::of(b"st"),
            stage,
        }
    }

    fn key() -> SecretKey {
        SecretKey::generate().expect("key")
    }

    #[test]
    fn a_promotion_signed_at_the_threshold_verifies() {
        let (a, b) = (key(), key());
        let env = signed(&decision(Some("early")), &[&a, &b]);
        let v =
            verify(&env, &trust(&[&a, &b], 2), expect(Some("early")), 600, NOW).expect("verifies");
        assert_eq!(v.signers.len(), 2);
        assert_eq!(v.decision.stage.as_deref(), Some("early"));
    }

    #[test]
    fn forged_promotion_by_an_untrusted_key_is_refused() {
        let (a, thief) = (key(), key());
        let env = signed(&decision(Some("early")), &[&thief]);
        let e = verify(&env, &trust(&[&a], 1), expect(Some("early")), 600, NOW);
        assert!(matches!(e, Err(DecisionRefusal::Signatures(_))), "{e:?}");
    }

    #[test]
    fn one_key_twice_does_not_make_a_threshold_of_two() {
        let a = key();
        let env = signed(&decision(Some("early")), &[&a, &a]);
        let e = verify(
            &env,
            &trust(&[&a, &key()], 2),
            expect(Some("early")),
            600,
            NOW,
        );
        assert!(matches!(e, Err(DecisionRefusal::Signatures(_))), "{e:?}");
    }

    #[test]
    fn promotion_replayed_for_another_stage_or_release_is_refused() {
        let a = key();
        let t = trust(&[&a], 1);
        let env = signed(&decision(Some("early")), &[&a]);
        for other in [
            expect(Some("rest")),
            expect(None),
            Expected {
                version: 8,
                ..expect(Some("early"))
            },
            Expected {
                statement: Digest::of(b"another"),
                ..expect(Some("early"))
            },
        ] {
            let e = verify(&env, &t, other, 600, NOW);
            assert!(matches!(e, Err(DecisionRefusal::Mismatch(_))), "{e:?}");
        }
        // A halt is not a promotion.
        let halt = signed(&decision(None), &[&a]);
        assert!(verify(&halt, &t, expect(None), 600, NOW).is_ok());
        assert!(verify(&halt, &t, expect(Some("early")), 600, NOW).is_err());
    }

    #[test]
    fn promotion_with_a_swapped_body_is_refused_before_parsing() {
        let a = key();
        let good = decision(Some("early")).to_bytes();
        let sig = sign_minisign(&a, &good, &trusted_comment(&good, a.public_key().key_id));
        let env = encode(b"{not even json", &[sig]);
        let e = verify(&env, &trust(&[&a], 1), expect(Some("early")), 600, NOW);
        assert!(matches!(e, Err(DecisionRefusal::Signatures(_))), "{e:?}");
    }

    #[test]
    fn future_dated_promotion_is_refused() {
        let a = key();
        let mut d = decision(Some("early"));
        d.created = NOW + 3600;
        let e = verify(
            &signed(&d, &[&a]),
            &trust(&[&a], 1),
            expect(Some("early")),
            600,
            NOW,
        );
        assert!(
            matches!(e, Err(DecisionRefusal::FutureDated { .. })),
            "{e:?}"
        );
    }
}
