//! Tests of `forward::allocate`: shares, priority, hold-off, down at once, probes.

use super::*;

/// A three-layer track with three temporal layers each: q 150 kbit/s, h 500, f 1500 at
/// full frame rate; temporal layers 0 and 1 carry 40 % and 60 %.
fn steps() -> Vec<Step> {
    ladder(candidates())
}

fn candidates() -> Vec<Step> {
    let mut out = Vec::new();
    for (layer, full) in [150_000u64, 500_000, 1_500_000].into_iter().enumerate() {
        for (temporal, share) in [40u64, 60, 100].into_iter().enumerate() {
            out.push(Step {
                layer,
                spatial: layer as u8,
                temporal: temporal as u8,
                bitrate: full * share / 100,
            });
        }
    }
    out
}

fn at(steps: &[Step], layer: usize, temporal: u8) -> Option<usize> {
    steps
        .iter()
        .position(|s| (s.layer, s.temporal) == (layer, temporal))
}

#[test]
fn shares_fill_lowest_first_then_climb_in_priority_order() {
    let s = steps();
    let limited: Vec<Step> = s.iter().copied().filter(|x| x.layer == 0).collect();
    // (name, estimate, slots, expected picks as (layer, temporal))
    type Case<'a> = (&'static str, u64, Vec<&'a [Step]>, Vec<Option<(usize, u8)>>);
    let cases: Vec<Case> = vec![
        ("plenty: the top", 10_000_000, vec![&s], vec![Some((2, 2))]),
        (
            "1 Mbit/s: h (f costs 1.5)",
            1_000_000,
            vec![&s],
            vec![Some((1, 2))],
        ),
        ("300 kbit/s: q", 300_000, vec![&s], vec![Some((0, 2))]),
        (
            "80 kbit/s: q at a quarter frame rate",
            80_000,
            vec![&s],
            vec![Some((0, 0))],
        ),
        (
            "temporal before spatial",
            150_000,
            vec![&s],
            vec![Some((0, 2))],
        ),
        (
            "too little for the lowest: paused",
            50_000,
            vec![&s],
            vec![None],
        ),
        (
            "two slots: both get their lowest, the first climbs first",
            700_000,
            vec![&s, &s],
            vec![Some((1, 2)), Some((0, 2))],
        ),
        (
            "the second slot is paused when only one lowest fits",
            100_000,
            vec![&s, &s],
            vec![Some((0, 1)), None],
        ),
        (
            "a slot's limits cap it and leave the rest to others",
            2_000_000,
            vec![&limited, &s],
            vec![Some((0, 2)), Some((2, 2))],
        ),
        ("no layers: nothing", 1_000_000, vec![&[]], vec![None]),
    ];
    for (name, estimate, slots, want) in cases {
        let picks = share(estimate, &slots);
        let got: Vec<Option<(usize, u8)>> = picks
            .iter()
            .zip(&slots)
            .map(|(p, steps)| p.map(|i| (steps[i].layer, steps[i].temporal)))
            .collect();
        assert_eq!(got, want, "{name}");
        let total: u64 = picks
            .iter()
            .zip(&slots)
            .filter_map(|(p, steps)| p.map(|i| steps[i].bitrate))
            .sum();
        assert!(total <= estimate, "{name}: {total} over {estimate}");
    }
}

#[test]
fn the_ladder_climbs_temporal_layers_first_and_never_loses_frame_rate() {
    let got: Vec<(usize, u8)> = steps().iter().map(|s| (s.layer, s.temporal)).collect();
    assert_eq!(got, vec![(0, 0), (0, 1), (0, 2), (1, 2), (2, 2)]);
    // Without temporal layers (one step per layer) every layer stays.
    let plain: Vec<Step> = (0..3)
        .map(|layer| Step {
            layer,
            spatial: layer as u8,
            temporal: 2,
            bitrate: 100_000 * (layer as u64 + 1),
        })
        .collect();
    assert_eq!(ladder(plain.clone()), plain);
    // A larger layer that costs less than a smaller one (an encoder starving it) comes
    // first, and the smaller one is left out.
    let odd = vec![
        Step {
            layer: 0,
            spatial: 0,
            temporal: 2,
            bitrate: 300_000,
        },
        Step {
            layer: 1,
            spatial: 1,
            temporal: 2,
            bitrate: 200_000,
        },
    ];
    assert_eq!(ladder(odd.clone()), vec![odd[1]]);
}

#[test]
fn down_at_once_up_after_holding() {
    let s = steps();
    let t0 = Instant::now();
    let mut st = [SlotState::default()];
    let ms = |n: u64| t0 + Duration::from_millis(n);
    let play = |st: &[SlotState]| match st[0].target() {
        Some(Target::Play(x)) => at(&s, x.layer, x.temporal),
        _ => None,
    };
    allocate(1_000_000, &[&s], &mut st, false, ms(0));
    assert_eq!(play(&st), at(&s, 1, 2), "the first allocation is immediate");
    allocate(300_000, &[&s], &mut st, false, ms(100));
    assert_eq!(play(&st), at(&s, 0, 2), "down at once");
    allocate(5_000_000, &[&s], &mut st, false, ms(200));
    assert_eq!(play(&st), at(&s, 0, 2), "not up at once");
    allocate(
        5_000_000,
        &[&s],
        &mut st,
        false,
        ms(200 + UP_HOLD.as_millis() as u64 + 100),
    );
    assert_eq!(
        play(&st),
        at(&s, 0, 2),
        "held longer after a recent downgrade"
    );
    allocate(
        5_000_000,
        &[&s],
        &mut st,
        false,
        ms(200 + UP_HOLD_AFTER_DOWN.as_millis() as u64),
    );
    assert_eq!(
        play(&st),
        at(&s, 2, 2),
        "up after the hold, to what the share allows"
    );
    // A dip resets the hold.
    let t1 = 20_000;
    allocate(1_000_000, &[&s], &mut st, false, ms(t1));
    allocate(
        5_000_000,
        &[&s],
        &mut st,
        false,
        ms(t1 + RECENT_DOWN.as_millis() as u64 + 1),
    );
    allocate(
        800_000,
        &[&s],
        &mut st,
        false,
        ms(t1 + RECENT_DOWN.as_millis() as u64 + 500),
    );
    assert_eq!(play(&st), at(&s, 1, 2));
    allocate(
        5_000_000,
        &[&s],
        &mut st,
        false,
        ms(t1 + RECENT_DOWN.as_millis() as u64 + 600),
    );
    allocate(
        5_000_000,
        &[&s],
        &mut st,
        false,
        ms(t1 + RECENT_DOWN.as_millis() as u64 + 1_000),
    );
    assert_eq!(play(&st), at(&s, 1, 2), "the hold restarted at the dip");
}

#[test]
fn a_playing_slot_keeps_its_lowest_step_a_little_under_its_cost() {
    let s = steps();
    let t0 = Instant::now();
    let mut st = [SlotState::default()];
    allocate(100_000, &[&s], &mut st, false, t0);
    assert_eq!(st[0].target(), Some(Target::Play(s[1])));
    // 50k: the lowest step costs 60k, three quarters of it fit: it keeps playing.
    allocate(
        50_000,
        &[&s],
        &mut st,
        false,
        t0 + Duration::from_millis(100),
    );
    assert_eq!(st[0].target(), Some(Target::Play(s[0])));
    allocate(
        40_000,
        &[&s],
        &mut st,
        false,
        t0 + Duration::from_millis(200),
    );
    assert_eq!(st[0].target(), Some(Target::Paused));
    // Not yet playing: it needs the whole cost.
    let mut fresh = [SlotState::default()];
    allocate(50_000, &[&s], &mut fresh, false, t0);
    assert_eq!(fresh[0].target(), Some(Target::Paused));
}

#[test]
fn pause_and_resume() {
    let s = steps();
    let t0 = Instant::now();
    let mut st = [SlotState::default()];
    allocate(1_000_000, &[&s], &mut st, false, t0);
    allocate(
        40_000,
        &[&s],
        &mut st,
        false,
        t0 + Duration::from_millis(100),
    );
    assert_eq!(st[0].target(), Some(Target::Paused));
    allocate(
        100_000,
        &[&s],
        &mut st,
        false,
        t0 + Duration::from_millis(200),
    );
    assert_eq!(
        st[0].target(),
        Some(Target::Paused),
        "resumes only after the hold"
    );
    allocate(100_000, &[&s], &mut st, false, t0 + Duration::from_secs(4));
    assert_eq!(st[0].target(), Some(Target::Play(s[1])));
}

#[test]
fn probes_are_sized_to_the_next_step_and_go_on_through_the_hold() {
    let s = steps();
    let t0 = Instant::now();
    let mut st = [SlotState::default(), SlotState::default()];
    // 100 kbit/s: slot 0 at q T1 (90k), q T2 costs 60k more: probe the minimum.
    let probe = allocate(100_000, &[&s, &[]], &mut st, false, t0);
    assert_eq!(probe, Some(MIN_PROBE));
    // At h (500k) with 1.2 Mbit/s: f costs 1,000k more: probe 1,200k.
    let mut st = [SlotState::default()];
    assert_eq!(
        allocate(1_200_000, &[&s], &mut st, false, t0),
        Some(1_200_000)
    );
    // A slot waiting out its hold still asks: the padding keeps the estimate up.
    allocate(
        5_000_000,
        &[&s],
        &mut st,
        false,
        t0 + Duration::from_millis(100),
    );
    assert_eq!(
        allocate(
            5_000_000,
            &[&s],
            &mut st,
            false,
            t0 + Duration::from_millis(200)
        ),
        Some(1_200_000)
    );
    // At the top of its limits: nothing to probe for.
    assert_eq!(
        allocate(
            5_000_000,
            &[&s],
            &mut st,
            false,
            t0 + Duration::from_secs(2)
        ),
        None
    );
    // Paused: probe for the lowest step.
    let mut st = [SlotState::default()];
    assert_eq!(allocate(10_000, &[&s], &mut st, false, t0), Some(MIN_PROBE));
}

#[test]
fn a_running_probe_shortens_the_hold() {
    let s = steps();
    let t0 = Instant::now();
    let mut st = [SlotState::default()];
    allocate(1_000_000, &[&s], &mut st, false, t0);
    allocate(
        300_000,
        &[&s],
        &mut st,
        false,
        t0 + Duration::from_millis(100),
    );
    allocate(
        5_000_000,
        &[&s],
        &mut st,
        true,
        t0 + Duration::from_millis(200),
    );
    allocate(
        5_000_000,
        &[&s],
        &mut st,
        true,
        t0 + Duration::from_millis(200) + PROBED_HOLD,
    );
    assert_eq!(
        st[0].target(),
        Some(Target::Play(*s.last().unwrap())),
        "up after the probe's hold, though the slot went down just now"
    );
}
