//! The registry and its kinds.

use std::sync::Arc;
use std::time::Duration;

use super::*;

fn enabled(components: &[Component]) -> Arc<Faults> {
    Faults::new(components, true, Some("secret".into()))
}

#[test]
fn requests_parse_with_defaults_and_ranges_are_checked() {
    let r: FaultRequest =
        serde_json::from_str(r#"{"kind":"link_latency","latency_ms":80,"duration_s":5}"#)
            .expect("parses");
    assert_eq!(
        r.fault,
        Fault::LinkLatency {
            latency_ms: 80,
            jitter_ms: 0
        }
    );
    let stall: FaultRequest =
        serde_json::from_str(r#"{"kind":"stall","duration_s":1}"#).expect("parses");
    assert_eq!(stall.fault, Fault::Stall);
    let clip: FaultRequest =
        serde_json::from_str(r#"{"kind":"clipping","duration_s":1}"#).expect("parses");
    assert_eq!(
        clip.fault,
        Fault::Clipping {
            from_ms: 300,
            len_ms: 200
        }
    );
    assert!(serde_json::from_str::<FaultRequest>(r#"{"kind":"meteor","duration_s":1}"#).is_err());
    assert!(serde_json::from_str::<FaultRequest>(r#"{"kind":"stall"}"#).is_err());
    for bad in [
        Fault::Slowdown { factor: 0.5 },
        Fault::CorruptFrames { every: 0 },
        Fault::DcOffset { offset: 0 },
        Fault::LinkLatency {
            latency_ms: 0,
            jitter_ms: 0,
        },
        Fault::DeadAir {
            from_ms: 0,
            len_ms: 0,
        },
    ] {
        assert!(bad.validate().is_err(), "{bad:?}");
    }
}

#[tokio::test]
async fn a_fault_is_refused_unless_enabled_authorized_and_applied_here() {
    let off = Faults::disabled(&[Component::Worker]);
    assert!(matches!(
        off.start(Fault::Stall, Duration::from_secs(1)),
        Err(FaultError::Disabled)
    ));
    // Enabled without a token is not enabled.
    let no_token = Faults::new(&[Component::Worker], true, None);
    assert!(!no_token.enabled());
    let worker = enabled(&[Component::Worker]);
    assert!(matches!(
        worker.authorize(Some("wrong")),
        Err(FaultError::Unauthorized)
    ));
    assert!(matches!(
        worker.authorize(None),
        Err(FaultError::Unauthorized)
    ));
    assert!(worker.authorize(Some("secret")).is_ok());
    let latency = Fault::LinkLatency {
        latency_ms: 10,
        jitter_ms: 0,
    };
    let err = worker
        .start(latency, Duration::from_secs(1))
        .expect_err("not a worker fault");
    assert!(err.to_string().contains("orchestrator"), "{err}");
    assert!(matches!(
        worker.start(Fault::Stall, Duration::from_secs(7200)),
        Err(FaultError::Invalid(_))
    ));
}

#[tokio::test]
async fn active_faults_apply_until_they_expire_or_stop() {
    let faults = enabled(&[Component::Worker, Component::Orchestrator]);
    assert!(!faults.stalled() && faults.slowdown().is_none() && faults.audio().is_none());
    faults
        .start(Fault::CorruptFrames { every: 3 }, Duration::from_secs(60))
        .expect("starts");
    assert_eq!(
        (0..9).filter(|&k| faults.corrupts(k)).collect::<Vec<_>>(),
        vec![2, 5, 8]
    );
    faults
        .start(Fault::DropFrames { every: 1 }, Duration::from_secs(60))
        .expect("starts");
    assert!(!faults.drops(0), "the first frame always goes");
    assert!(faults.drops(1));
    faults
        .start(
            Fault::LinkLatency {
                latency_ms: 100,
                jitter_ms: 20,
            },
            Duration::from_secs(60),
        )
        .expect("starts");
    for _ in 0..200 {
        let d = faults.link_delay().expect("active").as_millis();
        assert!((80..=120).contains(&d), "{d}");
    }
    faults
        .start(Fault::Stall, Duration::from_millis(150))
        .expect("starts");
    assert!(faults.stalled());
    assert_eq!(faults.list().len(), 4);
    // A second fault of a kind replaces the first.
    faults
        .start(Fault::CorruptFrames { every: 1 }, Duration::from_secs(60))
        .expect("starts");
    assert_eq!(faults.list().len(), 4);
    assert!(faults.corrupts(0));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!faults.stalled(), "expired");
    assert_eq!(faults.stop(Some("drop_frames")), 1);
    assert!(!faults.drops(1));
    assert_eq!(faults.stop(None), 2);
    assert!(faults.list().is_empty() && faults.link_delay().is_none());
}
