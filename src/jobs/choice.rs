//! Which member of a model's pool takes a job, and whether a failed attempt may go to
//! another member. Pure decisions, taken once per job (never per streamed event); the
//! registry (registry.rs) takes them under its lock, so two admissions never pick the
//! same last free slot.

/// The member with the most free slots; among those tied, the first after `last` (the
/// member this pool picked last time) in pool order, so tied members take turns. None
/// when no member has a free slot.
pub fn pick(free: &[u32], last: Option<usize>) -> Option<usize> {
    let most = *free.iter().max()?;
    if most == 0 {
        return None;
    }
    let n = free.len();
    let start = last.map_or(0, |l| l + 1);
    (0..n).map(|k| (start + k) % n).find(|&i| free[i] == most)
}

/// How one attempt on a member failed, as far as trying another member cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failed {
    /// No connection was made (refused, no route, connect timeout): the member never
    /// saw the request.
    NoConnection,
    /// The member answered this non-2xx status instead of a stream.
    Status(u16),
    /// Anything else: the request reached the member and it may be generating.
    Other,
}

/// Whether a job goes to another member after `how`: only when the member never took
/// the request (no connection) or turned it down with a 5xx, before any byte reached
/// the client (`streamed`), and only once per job (`retried`). So nothing is generated
/// twice, and a client never sees two answers spliced.
pub fn try_another(how: Failed, streamed: bool, retried: bool) -> bool {
    if streamed || retried {
        return false;
    }
    match how {
        Failed::NoConnection => true,
        Failed::Status(s) => (500..600).contains(&s),
        Failed::Other => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_member_with_most_free_slots_wins() {
        assert_eq!(pick(&[1, 3, 2], None), Some(1));
        assert_eq!(pick(&[1, 3, 2], Some(1)), Some(1), "no tie, no turn");
        assert_eq!(pick(&[0, 0], None), None, "all full");
        assert_eq!(pick(&[], None), None, "empty pool");
        assert_eq!(pick(&[0, 1], Some(1)), Some(1));
    }

    #[test]
    fn tied_members_take_turns() {
        assert_eq!(pick(&[2, 2], None), Some(0));
        assert_eq!(pick(&[2, 2], Some(0)), Some(1));
        assert_eq!(pick(&[2, 2], Some(1)), Some(0), "wraps around");
        // Only the tied ones take turns: after 0 comes 2, skipping 1.
        assert_eq!(pick(&[2, 1, 2], Some(0)), Some(2));
        assert_eq!(pick(&[2, 1, 2], Some(2)), Some(0));
        // A `last` beyond a pool that shrank starts over.
        assert_eq!(pick(&[1, 1], Some(5)), Some(0));
    }

    /// Four jobs on two members with two slots each, admitted one after the other
    /// while none finishes: two each.
    #[test]
    fn four_jobs_on_two_by_two_slots_split_two_and_two() {
        let mut free = [2, 2];
        let mut last = None;
        let mut got = [0; 2];
        for _ in 0..4 {
            let i = pick(&free, last).unwrap();
            free[i] -= 1;
            got[i] += 1;
            last = Some(i);
        }
        assert_eq!(got, [2, 2]);
        assert_eq!(pick(&free, last), None, "a fifth finds no slot");
    }

    #[test]
    fn another_member_only_when_nothing_was_generated_and_only_once() {
        assert!(try_another(Failed::NoConnection, false, false));
        assert!(try_another(Failed::Status(500), false, false));
        assert!(try_another(Failed::Status(503), false, false));
        assert!(try_another(Failed::Status(599), false, false));
        assert!(
            !try_another(Failed::Status(404), false, false),
            "4xx is ours"
        );
        assert!(!try_another(Failed::Status(401), false, false));
        assert!(!try_another(Failed::Status(600), false, false));
        assert!(
            !try_another(Failed::Other, false, false),
            "may be generating"
        );
        assert!(!try_another(Failed::Status(500), true, false), "bytes sent");
        assert!(!try_another(Failed::NoConnection, false, true), "once");
    }
}
