use super::*;

#[test]
fn flow_blocks_cover_the_clause_without_tiny_tails() {
    assert_eq!(
        flow_block_end(0, 18, 151),
        18,
        "the first block is only what the decoder needs"
    );
    assert_eq!(
        flow_block_end(18, 34, 151),
        151,
        "a 5-frame tail joins the second block"
    );
    assert_eq!(flow_block_end(18, 34, 600), 146);
    assert_eq!(flow_block_end(146, 200, 600), 274);
    assert_eq!(flow_block_end(530, 600, 600), 600);
    assert_eq!(flow_block_end(0, 10, 10), 10);
}

fn window(start: usize, end: usize, len: usize) -> Window {
    Window {
        start,
        end,
        lo: start.saturating_sub(10),
        hi: (end + 10).min(len),
    }
}

#[test]
fn a_window_widens_with_real_frames_first_then_zeros_away_from_its_edges() {
    // A middle window with flow frames computed well past it: real
    // frames on the left, then on the right.
    let w = window(56, 120, 600);
    let p = Padded::widen(w, 600, 274, 10, 148).expect("widens");
    assert_eq!((p.lo, p.hi, p.zeros_left, p.zeros_right), (0, 148, 0, 0));
    assert_eq!(p.kept(w), 56..120);
    // A first window: nothing real beyond it yet, and its left edge is
    // the clause's start; zeros on the right, past its context.
    let first = window(0, 8, 600);
    let p = Padded::widen(first, 600, 18, 10, 34).expect("widens");
    assert_eq!((p.lo, p.hi, p.zeros_left, p.zeros_right), (0, 18, 0, 16));
    assert_eq!(p.kept(first), 0..8);
    // A clause's last window: real frames on the left only; zeros on
    // the left once those are used up, never past its last frame.
    let last = window(24, 40, 40);
    let p = Padded::widen(last, 40, 40, 10, 52).expect("widens");
    assert_eq!((p.lo, p.hi, p.zeros_left, p.zeros_right), (0, 40, 12, 0));
    assert_eq!(p.kept(last), 36..52);
    // A whole short clause has no side to pad on.
    assert_eq!(Padded::widen(window(0, 12, 12), 12, 12, 10, 18), None);
    // Nor does anything without context; and no window shrinks.
    assert_eq!(Padded::widen(window(0, 8, 600), 600, 18, 0, 34), None);
    assert_eq!(Padded::widen(window(56, 120, 600), 600, 274, 10, 50), None);
}

#[test]
fn windows_group_by_width_and_never_pad_more_than_they_hold() {
    // Three steady windows, a first window and a short clause's only one.
    let due = [
        (0, window(120, 248, 600)),
        (1, window(0, 8, 300)),
        (2, window(248, 376, 600)),
        (3, window(0, 12, 12)),
        (4, window(24, 56, 80)),
    ];
    let ready = |i: usize| match i {
        0 | 2 => (600, 600),
        1 => (300, 18),
        3 => (12, 12),
        _ => (80, 80),
    };
    let batches = Batch::group(&due, ready, 10, &[]);
    let shape: Vec<(usize, Vec<usize>)> = batches
        .iter()
        .map(|b| (b.width, b.members.iter().map(|m| m.0).collect()))
        .collect();
    // 148 wide: both steady windows; 52: the third, with the first
    // window (18 wide) too narrow for it; then 18 and 12 alone (a
    // 12-frame clause cannot be padded).
    assert_eq!(
        shape,
        [
            (148, vec![0, 2]),
            (52, vec![4]),
            (18, vec![1]),
            (12, vec![3])
        ]
    );
    // With the standard widths, an odd-sized window rounds up.
    let odd = [(0, window(24, 40, 40))];
    let b = Batch::group(&odd, |_| (40, 40), 10, &[18, 34, 52, 84, 148]);
    assert_eq!(b[0].width, 34);
}
