use super::*;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn policy() -> Policy {
    Policy {
        threads: 1,
        first_audio_budget: ms(100),
        lookahead: ms(2_000),
        send_ahead: ms(0),
        safety_margin: ms(100),
        efficiency: 1.0,
        step_audio: ms(500),
        admission: true,
        batch: 1,
        batch_horizon: ms(500),
    }
}

fn demand(audio: f64) -> Demand {
    Demand {
        audio,
        cost: 0.1,
        next: None,
        grows: false,
    }
}

fn run(streams: &mut Streams<&'static str>, now: Instant) -> Step<&'static str> {
    match streams.next(now) {
        Next::Run(step) => step,
        Next::Wait(w) => panic!("nothing runnable (wake {w:?})"),
    }
}

/// Adds a stream whose clock started at `anchor`, that has produced
/// `produced` frames and sent `sent` of them.
fn playing(
    s: &mut Streams<&'static str>,
    name: &'static str,
    anchor: Instant,
    produced: u32,
    sent: u32,
) -> StreamId {
    let id = s
        .admit(anchor, demand(10.0), Delivery::Realtime, 0)
        .expect("admitted");
    s.insert(id, name);
    let slot = s.slots.get_mut(&id).expect("slot");
    slot.produced = produced;
    slot.playout.start(anchor);
    for _ in 0..sent {
        slot.playout.sent_one();
    }
    id
}

#[test]
fn the_earliest_deadline_runs_first() {
    let t0 = Instant::now();
    let mut s = Streams::new(Policy {
        admission: false,
        ..policy()
    });
    // Both have produced 300 ms; b's clock started 150 ms earlier.
    let a = playing(&mut s, "a", t0, 15, 15);
    let b = playing(&mut s, "b", t0 - ms(150), 15, 15);
    assert_eq!(s.deadline(a, t0), Some(t0 + ms(300 - 100)));
    assert_eq!(s.deadline(b, t0), Some(t0 + ms(150 - 100)));
    let step = run(&mut s, t0);
    assert_eq!((step.id, step.job), (b, "b"));
    assert_eq!(run(&mut s, t0).id, a, "then a");
}

#[test]
fn a_step_is_due_a_margin_before_its_frames_should_play() {
    let t0 = Instant::now();
    let mut s = Streams::new(Policy {
        send_ahead: ms(1_000),
        admission: false,
        ..policy()
    });
    // 1.5 s produced: frame 75 plays at t0 + 1.5 s (it leaves a second
    // earlier, into the listener's buffer), so the step that makes it is
    // due at t0 + 1.4 s, real-time or fast alike.
    let id = playing(&mut s, "listener", t0, 75, 50);
    assert_eq!(s.deadline(id, t0), Some(t0 + ms(1_400)));
    let fast = s.admit(t0, demand(10.0), Delivery::Fast, 0).expect("fast");
    s.insert(fast, "fast");
    let slot = s.slots.get_mut(&fast).expect("slot");
    slot.produced = 75;
    slot.playout.start(t0);
    assert_eq!(s.deadline(fast, t0), Some(t0 + ms(1_400)));
    // A new stream's first audio goes first: it is due in 100 ms.
    let new = s
        .admit(t0, demand(2.0), Delivery::Realtime, 0)
        .expect("newcomer");
    s.insert(new, "new");
    assert_eq!(run(&mut s, t0).id, new);
}

#[test]
fn a_stream_far_enough_ahead_is_parked_until_it_needs_more() {
    let t0 = Instant::now();
    let mut s = Streams::new(policy());
    // 2.5 s produced, clock at 0: 2.5 s ahead, parked for 0.5 s.
    let id = playing(&mut s, "a", t0, 125, 125);
    match s.next(t0) {
        Next::Wait(Some(at)) => assert_eq!(at, t0 + ms(500)),
        other => panic!("{other:?}"),
    }
    match s.next(t0 + ms(499)) {
        Next::Wait(Some(_)) => {}
        other => panic!("still parked at 499 ms: {other:?}"),
    }
    let step = run(&mut s, t0 + ms(500));
    assert_eq!(step.id, id, "woken when 2 s ahead");
}

#[test]
fn a_fast_stream_is_parked_only_while_its_reader_is_behind() {
    let t0 = Instant::now();
    let mut s = Streams::new(Policy {
        admission: false,
        ..policy()
    });
    // 10 s produced at once, of which the reader took 9.5 s: 0.5 s ahead
    // of it, within the 2 s lookahead, however far ahead of the clock.
    let fast = s.admit(t0, demand(60.0), Delivery::Fast, 0).expect("fast");
    s.insert(fast, "fast");
    let slot = s.slots.get_mut(&fast).expect("slot");
    slot.produced = 500;
    slot.playout.start(t0);
    for _ in 0..475 {
        slot.playout.sent_one();
    }
    let step = run(&mut s, t0);
    assert_eq!(step.id, fast);
    // The reader stops: 2.5 s ahead of it, parked, and looked at again
    // soon (its reader may take frames at any time).
    s.put_back(fast, step.job, 600, demand(50.0));
    match s.next(t0) {
        Next::Wait(Some(at)) => assert_eq!(at, t0 + ms(50)),
        other => panic!("{other:?}"),
    }
    // Once it has taken 1 s more, the stream runs.
    let clock = s.playout(fast).expect("clock");
    for _ in 0..50 {
        clock.sent_one();
    }
    assert_eq!(run(&mut s, t0).id, fast);
}

#[test]
fn a_blocked_stream_runs_no_step_until_unblocked() {
    let t0 = Instant::now();
    let mut s = Streams::new(Policy {
        admission: false,
        ..policy()
    });
    let id = s
        .admit(t0, demand(1.0), Delivery::Fast, 0)
        .expect("admitted");
    s.insert(id, "held back");
    let step = run(&mut s, t0);
    assert!(s.put_back(id, step.job, 10, demand(0.8)).is_none());
    s.block(id);
    assert!(matches!(s.next(t0), Next::Wait(None)), "no wake of its own");
    assert_eq!(s.job_mut(id).copied(), Some("held back"));
    assert_eq!(s.produced(id), Some(10));
    s.unblock(id);
    assert_eq!(run(&mut s, t0).id, id);
}

#[test]
fn a_fast_stream_that_is_read_yields_to_streams_due_sooner() {
    let t0 = Instant::now();
    let mut s = Streams::new(Policy {
        admission: false,
        ..policy()
    });
    // A fast stream 10 s ahead of its clock still runs when alone.
    let fast = s.admit(t0, demand(60.0), Delivery::Fast, 0).expect("fast");
    s.insert(fast, "fast");
    let slot = s.slots.get_mut(&fast).expect("slot");
    slot.produced = 500;
    slot.playout.start(t0);
    for _ in 0..500 {
        slot.playout.sent_one();
    }
    assert_eq!(run(&mut s, t0).id, fast);
    s.put_back(fast, "fast", 500, demand(50.0));
    // A listener's stream due sooner goes first.
    let listener = playing(&mut s, "listener", t0, 25, 25);
    assert_eq!(run(&mut s, t0).id, listener);
    assert_eq!(run(&mut s, t0).id, fast);
}

#[test]
fn a_reader_that_does_not_read_keeps_its_stream_parked() {
    let t0 = Instant::now();
    let mut s = Streams::new(policy());
    // 2.2 s produced, only 5 frames (100 ms) sent: the listener cannot
    // be past 100 ms however much time passes.
    let id = playing(&mut s, "a", t0, 110, 5);
    for later in [ms(0), ms(1_000), ms(60_000)] {
        assert!(
            matches!(s.next(t0 + later), Next::Wait(_)),
            "parked after {later:?}"
        );
    }
    // Its next step is not late: the listener has 2.1 s left.
    assert_eq!(
        s.deadline(id, t0 + ms(60_000)),
        Some(t0 + ms(60_000 + 2_100 - 100))
    );
    // Once the reader takes frames again, the stream runs.
    let clock = s.playout(id).expect("clock");
    for _ in 5..100 {
        clock.sent_one();
    }
    assert_eq!(run(&mut s, t0 + ms(60_000)).id, id);
}

#[test]
fn a_first_window_beats_a_later_window_that_has_slack() {
    let t0 = Instant::now();
    let mut s = Streams::new(Policy {
        admission: false,
        ..policy()
    });
    // Playing, 1 s ahead: due at t0 + 1 s − 100 ms.
    playing(&mut s, "playing", t0, 50, 50);
    let new = s
        .admit(t0, demand(3.0), Delivery::Realtime, 0)
        .expect("admitted");
    s.insert(new, "new");
    let step = run(&mut s, t0);
    assert_eq!(step.job, "new", "first audio is due at t0 + 100 ms");
    assert!(step.first);
}

#[test]
fn a_later_window_beats_a_first_window_when_about_to_miss() {
    let t0 = Instant::now();
    let mut s = Streams::new(Policy {
        admission: false,
        ..policy()
    });
    // Playing with only 150 ms ahead: due at t0 + 50 ms, before the
    // new stream's t0 + 100 ms.
    playing(&mut s, "playing", t0, 50, 50);
    let now = t0 + ms(850);
    let new = s
        .admit(now, demand(3.0), Delivery::Realtime, 0)
        .expect("admitted");
    s.insert(new, "new");
    let step = run(&mut s, now);
    assert_eq!(step.job, "playing");
    assert!(!step.first);
    assert_eq!(step.deadline, t0 + ms(900));
}

#[test]
fn cancelling_removes_queued_work() {
    let t0 = Instant::now();
    let mut s = Streams::new(policy());
    let id = s
        .admit(t0, demand(1.0), Delivery::Realtime, 0)
        .expect("admitted");
    s.insert(id, "gone");
    assert_eq!(s.remove(id), Some("gone"), "queued work is dropped at once");
    assert!(matches!(s.next(t0), Next::Wait(None)));
    // A running step comes back to nothing.
    let id = s
        .admit(t0, demand(1.0), Delivery::Realtime, 0)
        .expect("admitted");
    s.insert(id, "running");
    let step = run(&mut s, t0);
    assert_eq!(s.remove(id), None);
    assert_eq!(s.put_back(id, step.job, 5, demand(0.9)), Some("running"));
    assert!(s.is_empty());
}

#[test]
fn admission_refuses_exactly_when_owed_work_exceeds_capacity() {
    let t0 = Instant::now();
    let mut s: Streams<&str> = Streams::new(Policy {
        safety_margin: ms(0),
        ..policy()
    });
    // Long streams that each need 30 % of the one thread: three fit
    // (90 %), a fourth would need 120 %.
    let long = Demand {
        audio: 600.0,
        cost: 0.3,
        next: None,
        grows: false,
    };
    let mut admitted = 0;
    while let Ok(id) = s.admit(t0, long, Delivery::Realtime, 0) {
        admitted += 1;
        assert!(admitted < 10, "admission never refused");
        // It starts playing with 1 s of audio ahead.
        let slot = s.slots.get_mut(&id).expect("slot");
        slot.produced = 50;
        slot.playout.start(t0);
    }
    assert_eq!(admitted, 3);
    assert!((s.utilisation() - 0.9).abs() < 1e-9);
    // A short request still fits beside them.
    let short = Demand {
        audio: 0.1,
        cost: 0.3,
        next: None,
        grows: false,
    };
    assert!(s.admit(t0, short, Delivery::Realtime, 0).is_ok());
}

#[test]
fn a_reader_that_stopped_reading_does_not_block_admission() {
    let t0 = Instant::now();
    let mut s: Streams<&str> = Streams::new(Policy {
        safety_margin: ms(0),
        ..policy()
    });
    // A stream whose reader took 5 frames and stopped, a minute ago.
    let stalled = playing(&mut s, "stalled", t0, 110, 5);
    let later = t0 + ms(60_000);
    assert!(s.deadline(stalled, later) > Some(later));
    assert!(s.admit(later, demand(5.0), Delivery::Realtime, 0).is_ok());
}

#[test]
fn a_refusal_says_when_to_retry() {
    let t0 = Instant::now();
    let mut s: Streams<&str> = Streams::new(policy());
    // One stream using 60 % of the thread for 5 s of audio (about 4.8 s
    // of compute time).
    let heavy = Demand {
        audio: 5.0,
        cost: 0.6,
        next: None,
        grows: false,
    };
    s.admit(t0, heavy, Delivery::Realtime, 0)
        .expect("the first fits");
    let refusal = s
        .admit(t0, heavy, Delivery::Realtime, 0)
        .expect_err("a second does not fit");
    // Together they need 120 %: the second fits once the first's
    // remaining work, and the overlap, fit (about 1.8 s later).
    let secs = refusal.retry_after.as_secs_f64();
    assert!((1.5..=5.0).contains(&secs), "retry after {secs} s");
    // Retried that much later (the first stream untouched), it fits.
    assert!(s.fits(t0, heavy, refusal.retry_after));
}

#[test]
fn a_worker_behind_for_a_moment_advises_a_short_retry() {
    let t0 = Instant::now();
    let mut s: Streams<&str> = Streams::new(Policy {
        admission: false,
        ..policy()
    });
    // A burst (let in past admission): eight new streams whose first steps
    // (0.3 s of audio at 0.1 each) have all come due with none run yet,
    // 0.24 s of compute against a 0.1 s slack. The thread is behind now,
    // whatever arrives.
    for _ in 0..8 {
        let id = s
            .admit(t0, demand(2.0), Delivery::Realtime, 0)
            .expect("admitted");
        s.insert(id, "burst");
    }
    s.policy.admission = true;
    let later = t0 + ms(300);
    let refusal = s
        .admit(later, demand(2.0), Delivery::Realtime, 0)
        .expect_err("nothing fits while the thread is behind");
    // The thread catches up within a quarter of a second and the burst's
    // 1.6 s of compute leaves room long before 30 s: the advice is the
    // moment the newcomer fits on top of what is due, not "never".
    let secs = refusal.retry_after.as_secs_f64();
    assert!((0.05..=5.0).contains(&secs), "retry after {secs} s");
}

#[test]
fn without_admission_everything_is_admitted() {
    let t0 = Instant::now();
    let mut s: Streams<&str> = Streams::new(Policy {
        admission: false,
        ..policy()
    });
    for _ in 0..100 {
        s.admit(t0, demand(600.0), Delivery::Realtime, 0)
            .expect("admitted");
    }
    assert_eq!(s.len(), 100);
}

#[test]
fn wide_steps_only_when_fewer_streams_than_threads() {
    let t0 = Instant::now();
    let mut s = Streams::new(Policy {
        threads: 2,
        admission: false,
        ..policy()
    });
    let a = s.admit(t0, demand(1.0), Delivery::Realtime, 0).expect("a");
    s.insert(a, "a");
    assert!(run(&mut s, t0).wide, "one stream on two threads");
    let b = s.admit(t0, demand(1.0), Delivery::Realtime, 0).expect("b");
    s.insert(b, "b");
    assert!(!run(&mut s, t0).wide, "two streams on two threads");
}

#[test]
fn a_batch_takes_the_compatible_steps_due_soon_after_the_lead() {
    let t0 = Instant::now();
    let mut s = Streams::new(Policy {
        admission: false,
        batch: 3,
        batch_horizon: ms(300),
        ..policy()
    });
    // Deadlines (produced − 100 ms): a 100, b 200, other 240, c 300,
    // d 500 (beyond the horizon); e is parked (2.5 s ahead).
    let a = playing(&mut s, "a", t0, 10, 10);
    let b = playing(&mut s, "b", t0, 15, 15);
    playing(&mut s, "other voice", t0, 17, 17);
    let c = playing(&mut s, "c", t0, 20, 20);
    playing(&mut s, "d", t0, 30, 30);
    playing(&mut s, "e", t0, 125, 125);
    let same_voice = |lead: &&str, other: &&str| lead.len() == other.len();
    let mut lead = run(&mut s, t0);
    assert_eq!(lead.id, a);
    let batch = s.companions(&mut lead, t0, same_voice, |_| Duration::ZERO);
    let ids: Vec<StreamId> = batch.iter().map(|st| st.id).collect();
    assert_eq!(ids, [b, c], "earliest compatible first, up to 3 in all");
    assert_eq!(batch[1].deadline, t0 + ms(300));
    assert!(!lead.wide);
    // Taken steps are running: the next lead is the one left behind.
    let mut next = run(&mut s, t0);
    assert_eq!(next.job, "other voice");
    let rest = s.companions(&mut next, t0, |_, _| true, |_| Duration::ZERO);
    let names: Vec<&str> = rest.iter().map(|st| st.job).collect();
    assert_eq!(names, ["d"], "within 300 ms of 240 ms; e stays parked");
    // Without batching, nothing joins.
    let mut single = Streams::new(Policy {
        admission: false,
        ..policy()
    });
    playing(&mut single, "x", t0, 10, 10);
    playing(&mut single, "y", t0, 10, 10);
    let mut lead = run(&mut single, t0);
    assert!(
        single
            .companions(&mut lead, t0, |_, _| true, |_| Duration::ZERO)
            .is_empty()
    );
}

#[test]
fn a_batch_grows_only_while_its_call_ends_before_every_member_is_due() {
    let t0 = Instant::now();
    let mut s = Streams::new(Policy {
        admission: false,
        batch: 10,
        batch_horizon: ms(1_000),
        ..policy()
    });
    // Frames due (to play): a 200 ms, b 300, c 400; `new` is a first step
    // due at 150 ms (its deadline, 150, sorts it right after a's 100).
    let a = playing(&mut s, "a", t0, 10, 10);
    let b = playing(&mut s, "b", t0, 15, 15);
    let c = playing(&mut s, "c", t0, 20, 20);
    let new = s
        .admit(t0 + ms(50), demand(1.0), Delivery::Realtime, 0)
        .expect("new");
    s.insert(new, "new");
    // A call of n steps: 90 ms + 40 ms each.
    let call = |n: usize| ms(90 + 40 * n as u64);
    let mut lead = run(&mut s, t0);
    assert_eq!(lead.id, a);
    let batch = s.companions(&mut lead, t0, |_, _| true, call);
    let ids: Vec<StreamId> = batch.iter().map(|st| st.id).collect();
    // Two steps end at 170 ms: too late for `new` (150), in time for a
    // (200) and b; three would end at 210, after a's frame is due.
    assert_eq!(ids, [b], "new skipped, c would make the call end late");
    for step in batch {
        s.put_back(step.id, step.job, 15, demand(1.0));
    }
    s.put_back(lead.id, lead.job, 10, demand(1.0));
    // 150 ms on, a is late whatever joins: the batch fills.
    let later = t0 + ms(150);
    let mut lead = run(&mut s, later);
    let batch = s.companions(&mut lead, later, |_, _| true, call);
    let mut ids: Vec<StreamId> = batch.iter().map(|st| st.id).collect();
    ids.push(lead.id);
    ids.sort();
    assert_eq!(ids, [a, b, c, new], "a late lead takes every step it can");
}

#[test]
fn the_fluid_test_checks_every_breakpoint() {
    let d = |start, lump, rate, total| Fluid {
        start,
        lump,
        rate,
        total,
        surge: 0.0,
    };
    // Half a thread for 10 s fits one thread.
    assert!(feasible(&[d(0.0, 0.0, 0.5, 5.0)], 1.0, 0.0));
    // Two lumps of 0.6 s due at 1 s do not.
    assert!(!feasible(
        &[d(1.0, 0.6, 0.0, 0.6), d(1.0, 0.6, 0.0, 0.6)],
        1.0,
        0.0
    ));
    // Unless one is due later.
    assert!(feasible(
        &[d(1.0, 0.6, 0.0, 0.6), d(2.0, 0.6, 0.0, 0.6)],
        1.0,
        0.0
    ));
    // A rate above capacity fails once its lump is used up.
    assert!(!feasible(&[d(0.0, 0.0, 1.2, 12.0)], 1.0, 0.5));
}

#[test]
fn a_surge_doubles_the_rate_while_audio_is_left() {
    let d = |surge| Fluid {
        start: 0.0,
        lump: 0.0,
        rate: 0.5,
        total: 2.0,
        surge,
    };
    // Half a thread fits one; twice that for a second does too, with the
    // slack of its first half second.
    assert!(feasible(&[d(0.0)], 1.0, 0.0));
    assert!(!feasible(&[d(1.0)], 0.9, 0.0), "1 s at 1.0");
    assert!(feasible(&[d(1.0)], 0.9, 0.1));
    // A surge longer than the audio lasts only as long as the audio.
    assert!(feasible(&[d(10.0)], 1.0, 0.0));
    assert!(!feasible(&[d(10.0)], 0.99, 0.0));
}

/// How many streams of `audio` seconds at `cost` are admitted at one
/// instant.
fn admitted_at_once(policy: Policy, audio: f64, cost: f64) -> usize {
    let t0 = Instant::now();
    let mut s: Streams<&str> = Streams::new(policy);
    let demand = Demand {
        audio,
        cost,
        next: None,
        grows: true,
    };
    let mut admitted = 0;
    while admitted < 100 && s.admit(t0, demand, Delivery::Realtime, 0).is_ok() {
        admitted += 1;
    }
    admitted
}

/// Whether `n` streams started at one instant keep the exact deadlines of
/// their steps: each first step (its text part and first window, counted
/// as [`FIRST_STEP_AUDIO`]) by the first-audio budget, then each decoder
/// window (8, 16, 32, 64, then 128 latent frames of 256 samples at 22,050
/// Hz, as a Piper clause is cut) whole when the window before it has
/// played out, with the slack the test allows.
fn windows_keep_their_deadlines(policy: Policy, audio: f64, cost: f64, n: usize) -> bool {
    let frame = 256.0 / 22_050.0;
    let budget = policy.first_audio_budget.as_secs_f64();
    // (deadline, compute) of one stream's steps.
    let mut steps = vec![(budget, FIRST_STEP_AUDIO * cost)];
    let (mut played, mut size) = (8.0 * frame, 16.0);
    while played < audio {
        let window = (size * frame).min(audio - played);
        steps.push((budget + played, window * cost));
        played += window;
        size = (size * 2.0).min(128.0);
    }
    let capacity = policy.threads as f64 * policy.efficiency;
    let slack = policy.threads as f64 * policy.safety_margin.as_secs_f64();
    let mut due = 0.0;
    steps.iter().all(|&(at, compute)| {
        due += compute * n as f64;
        due <= capacity * at + slack + 1e-9
    })
}

#[test]
fn a_burst_is_admitted_only_as_far_as_its_growing_windows_keep_their_deadlines() {
    let piper = Policy {
        threads: 2,
        efficiency: 0.8,
        send_ahead: ms(1_000),
        step_audio: Duration::from_secs_f64(128.0 * 256.0 / 22_050.0),
        ..policy()
    };
    let audio = 10.0;
    for cost in [0.05, 0.12, 0.2] {
        let admitted = admitted_at_once(piper, audio, cost);
        let most = (1..100)
            .take_while(|&n| windows_keep_their_deadlines(piper, audio, cost, n))
            .last()
            .unwrap_or(0);
        assert!(
            admitted > 0 && admitted <= most,
            "cost {cost}: {admitted} admitted at once; their windows allow {most}"
        );
        // And not needlessly few.
        assert!(
            admitted * 4 >= most * 3,
            "cost {cost}: {admitted} admitted at once; their windows allow {most}"
        );
    }
}

#[test]
fn a_stream_building_its_lead_holds_back_only_its_next_window_by_its_playout_time() {
    // One second sent ahead, as real-time delivery does: a stream with
    // 1 s produced is due on the playout clock 1 s from now, and its next
    // window is 0.2 s of audio. Neither its send-ahead nor the largest
    // window counts against a newcomer: the listener's buffer is not a
    // deadline.
    let t0 = Instant::now();
    let mut s: Streams<&str> = Streams::new(Policy {
        send_ahead: ms(1_000),
        step_audio: ms(1_500),
        efficiency: 0.8,
        ..policy()
    });
    let running = Demand {
        audio: 600.0,
        cost: 0.1,
        next: Some(0.2),
        grows: false,
    };
    let id = s.admit(t0, running, Delivery::Realtime, 0).expect("first");
    s.insert(id, "running");
    let slot = s.slots.get_mut(&id).expect("slot");
    slot.produced = 50;
    slot.playout.start(t0);
    assert!(
        s.admit(t0, demand(5.0), Delivery::Realtime, 0).is_ok(),
        "a newcomer is refused beside one cheap stream"
    );
    // The largest window, due now, would not have let it in: 1.5 s × 0.1
    // of compute against 0.1 s of slack.
    let mut strict = Streams::new(Policy {
        send_ahead: ms(1_000),
        step_audio: ms(1_500),
        efficiency: 0.8,
        ..policy()
    });
    let unknown = Demand {
        next: None,
        ..running
    };
    let id = strict
        .admit(t0, unknown, Delivery::Realtime, 0)
        .expect("first");
    strict.insert(id, "running");
    let slot = strict.slots.get_mut(&id).expect("slot");
    slot.produced = 1;
    slot.playout.start(t0);
    assert!(
        strict
            .admit(t0, demand(5.0), Delivery::Realtime, 0)
            .is_err()
    );
}
